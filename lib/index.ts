export * from './errors.js';
export { info, formatInfo, type Info, type LibraryStatus } from './info.js';
export { listProviders, type ProviderSummary } from './providers.js';
