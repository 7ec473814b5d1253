export { Agent, type AgentEvents } from './agent.js';
export { deserializeDescriptors, serializeDescriptors } from './core/descriptors.js';
export type { TransferPath } from './core/engine.js';
export { MemoryRegion, type MemoryKind, type MemorySource, type VramPath } from './core/memory.js';
export type { TransferMessage, TransferTelemetry } from './core/telemetry.js';
export { Transfer, type TransferStatus } from './core/transfer.js';
export * from './errors.js';
export type { ExchangeStats, PeerEvent } from './exchange/context.js';
export { RemoteRefusedError, type SocketAddress } from './exchange/tcp-channel.js';
export { BlockStore } from './file/blockstore.js';
export { FileTransfer, type FileEngineKind } from './file/engine.js';
export { FileRegion, type FileDescriptor } from './file/region.js';
export type { BlockStoreOptions, FileOpenOptions, FileTransferRequest } from './file/schemas.js';
export { cuda } from './gpu/cuda.js';
export type { VramSource } from './gpu/vram.js';
export { formatInfo, info, type Info, type LibraryStatus } from './info.js';
export { Notification, type NotificationMatch, type WaitForNotificationOptions } from './net/inbox.js';
export type { StagingStats } from './net/engine.js';
export type { NotificationDroppedError, NotificationStats } from './net/notifications.js';
export type { RemoteRegionInfo } from './net/peers.js';
export { PreparedLocal, PreparedRemote } from './net/prepared.js';
export { listProviders, type ProviderSummary } from './net/providers.js';
export type { RailStatus } from './net/endpoint.js';
export type { RailEvent } from './net/engine.js';
export type {
  AgentOptions,
  AllocateVramOptions,
  Descriptor,
  DescriptorList,
  EtcdOptions,
  ExchangeOptions,
  InvalidateOptions,
  ListenOptions,
  MetadataOptions,
  MetricsRegistry,
  NotificationBody,
  NotificationOptions,
  Op,
  PackedDescriptors,
  PeerAddress,
  RegionOptions,
  TransferRequest,
  VramOptions,
  VramRegionOptions,
  WaitOptions,
} from './schemas.js';
