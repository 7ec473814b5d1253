export { Agent, PreparedLocal, PreparedRemote } from './agent.js';
export { deserializeDescriptors, serializeDescriptors } from './descriptors.js';
export * from './errors.js';
export { formatInfo, info, type Info, type LibraryStatus } from './info.js';
export { MemoryRegion, type MemorySource } from './memory.js';
export { listProviders, type ProviderSummary } from './providers.js';
export type { AgentOptions, Descriptor, MetadataOptions, Op, TransferRequest, WaitOptions } from './schemas.js';
export { Transfer, type TransferStatus } from './transfer.js';
