/**
 * Typed errors. Every error ixfer throws or rejects with is an IxferError whose
 * `code` is stable (NIXL's names where they apply); `nativeMessage` carries the
 * shim's or the provider's own words when there are any.
 */

/** In the order of ixfer.h's status codes: IXFER_ERR_INVALID_PARAM = -1, ... */
export const ErrorCodes = [
  'ERR_INVALID_PARAM',
  'ERR_BACKEND',
  'ERR_NOT_FOUND',
  'ERR_MISMATCH',
  'ERR_NOT_ALLOWED',
  'ERR_REPOST_ACTIVE',
  'ERR_NOT_SUPPORTED',
  'ERR_REMOTE_DISCONNECT',
  'ERR_CANCELED',
  'ERR_TIMEOUT',
  'ERR_LIBRARY_MISSING',
  'ERR_END_OF_FILE',
  'ERR_NO_SPACE',
] as const;
export type ErrorCode = (typeof ErrorCodes)[number];

export interface ErrorOptions {
  nativeMessage?: string;
  cause?: unknown;
}

export class IxferError extends Error {
  readonly code: ErrorCode;
  readonly nativeMessage: string | undefined;
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.nativeMessage = options?.nativeMessage;
  }
  override get name(): string {
    return this.constructor.name;
  }
}

type ErrorClass = new (message: string, options?: ErrorOptions) => IxferError;

function defineError(code: ErrorCode, name: string): ErrorClass {
  const cls = class extends IxferError {
    constructor(message: string, options?: ErrorOptions) {
      super(code, message, options);
    }
  };
  Object.defineProperty(cls, 'name', { value: name });
  return cls;
}

/** A descriptor, option or blob is malformed. */
export const InvalidParamError = defineError('ERR_INVALID_PARAM', 'InvalidParamError');
/** libfabric, CUDA or the OS failed in a way that different input would not fix. */
export const BackendError = defineError('ERR_BACKEND', 'BackendError');
/** A peer, region or descriptor is not registered or not known. */
export const NotFoundError = defineError('ERR_NOT_FOUND', 'NotFoundError');
/** Local and remote descriptor lists do not pair up. */
export const MismatchError = defineError('ERR_MISMATCH', 'MismatchError');
/** Not allowed in the current state (e.g. deregistering memory in use). */
export const NotAllowedError = defineError('ERR_NOT_ALLOWED', 'NotAllowedError');
/** A transfer was posted again while still in flight. */
export const RepostActiveError = defineError('ERR_REPOST_ACTIVE', 'RepostActiveError');
/** This host, provider or build cannot do it. */
export const NotSupportedError = defineError('ERR_NOT_SUPPORTED', 'NotSupportedError');
/** The peer went away (connection reset, refused or closed). */
export const RemoteDisconnectError = defineError('ERR_REMOTE_DISCONNECT', 'RemoteDisconnectError');
/** Canceled by an AbortSignal, release() or close(). */
export const CanceledError = defineError('ERR_CANCELED', 'CanceledError');
/** A deadline passed. */
export const TimeoutError = defineError('ERR_TIMEOUT', 'TimeoutError');
/** A shared library (libfabric, CUDA, cuFile) could not be opened. */
export const LibraryMissingError = defineError('ERR_LIBRARY_MISSING', 'LibraryMissingError');
/** A file read reached the end of the file before the bytes asked for. */
export const EndOfFileError = defineError('ERR_END_OF_FILE', 'EndOfFileError');
/** A file write found the disk (or the quota) full. */
export const NoSpaceError = defineError('ERR_NO_SPACE', 'NoSpaceError');

const byCode: Record<ErrorCode, ErrorClass> = {
  ERR_INVALID_PARAM: InvalidParamError,
  ERR_BACKEND: BackendError,
  ERR_NOT_FOUND: NotFoundError,
  ERR_MISMATCH: MismatchError,
  ERR_NOT_ALLOWED: NotAllowedError,
  ERR_REPOST_ACTIVE: RepostActiveError,
  ERR_NOT_SUPPORTED: NotSupportedError,
  ERR_REMOTE_DISCONNECT: RemoteDisconnectError,
  ERR_CANCELED: CanceledError,
  ERR_TIMEOUT: TimeoutError,
  ERR_LIBRARY_MISSING: LibraryMissingError,
  ERR_END_OF_FILE: EndOfFileError,
  ERR_NO_SPACE: NoSpaceError,
};

/** Maps a negative ixfer_status to its code. */
export function codeOfStatus(status: number): ErrorCode {
  return ErrorCodes[-status - 1] ?? 'ERR_BACKEND';
}

/** The shim's status for a code (ixfer.h: -1 for the first of ErrorCodes, and on). */
export function statusOf(code: ErrorCode): number {
  return -(ErrorCodes.indexOf(code) + 1);
}

export function makeError(code: ErrorCode, message: string, options?: ErrorOptions): IxferError {
  return new byCode[code](message, options);
}
