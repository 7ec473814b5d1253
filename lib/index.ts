export { Agent, PreparedLocal, PreparedRemote, type NotificationStats } from './agent.js';
export { deserializeDescriptors, serializeDescriptors } from './descriptors.js';
export { BlockStore } from './blockstore.js';
export { cuda } from './cuda.js';
export type { BlockStoreOptions, FileDescriptor, FileOpenOptions, FileTransferRequest, VramSource } from './file-schemas.js';
export { FileRegion, FileTransfer, type FileEngineKind } from './files.js';
export * from './errors.js';
export type { ExchangeStats, PeerEvent } from './exchange/context.js';
export { RemoteRefusedError, type SocketAddress } from './exchange/tcp-channel.js';
export { formatInfo, info, type Info, type LibraryStatus } from './info.js';
export { MemoryRegion, type MemoryKind, type MemorySource } from './memory.js';
export { Notification, type NotificationMatch } from './notifications.js';
export { listProviders, type ProviderSummary } from './providers.js';
export type {
  AgentOptions,
  Descriptor,
  EtcdOptions,
  ExchangeOptions,
  InvalidateOptions,
  ListenOptions,
  MetadataOptions,
  NotificationBody,
  Op,
  PeerAddress,
  TransferRequest,
  WaitForNotificationOptions,
  WaitOptions,
} from './schemas.js';
export { Transfer, type TransferStatus } from './transfer.js';
