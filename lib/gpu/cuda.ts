/**
 * CUDA device memory from JavaScript: enough to fill VRAM and read it back
 * (tests, setup, small control data). These calls are synchronous copies on
 * the calling thread: keep them small, and move bulk data with transfers.
 */
import { constants } from 'node:buffer';

import { InvalidParamError, IxferError } from '../errors.js';
import { DescriptorSchema, parse, type Descriptor } from '../schemas.js';
import { check, shim } from '../native/shim.js';

/** Number of CUDA devices; 0 when the driver is missing or sees none. */
function deviceCount(): number {
  const out = [0];
  try {
    check(shim().cudaDeviceCount(out), 'counting CUDA devices');
  } catch (err) {
    if (err instanceof IxferError) return 0;
    throw err;
  }
  return out[0]!;
}

/** Copies bytes to device memory at desc.addr (at most desc.len of them). */
function write(desc: Descriptor, bytes: Uint8Array): void {
  const d = parse(DescriptorSchema, desc, 'descriptor');
  if (!(bytes instanceof Uint8Array)) throw new InvalidParamError('cuda.write copies a Uint8Array (a Buffer is one)');
  const n = Math.min(d.len, bytes.length);
  check(shim().cudaToDevice(d.addr, bytes, n), `copying ${n} bytes to the device`);
}

/** Reads desc.len bytes of device memory. */
function read(desc: Descriptor): Uint8Array {
  const d = parse(DescriptorSchema, desc, 'descriptor');
  if (d.len > constants.MAX_LENGTH) throw new InvalidParamError(`cuda.read returns at most ${constants.MAX_LENGTH} bytes at a time`);
  const out = new Uint8Array(d.len);
  check(shim().cudaFromDevice(out, d.addr, d.len), `copying ${d.len} bytes from the device`);
  return out;
}

/** Sets every byte of the range to value. */
function fill(desc: Descriptor, value: number): void {
  const d = parse(DescriptorSchema, desc, 'descriptor');
  if (!Number.isInteger(value) || value < 0 || value > 255) throw new InvalidParamError(`cuda.fill sets bytes: a value of 0..255, not ${String(value)}`);
  check(shim().cudaFill(d.addr, value, d.len), `filling ${d.len} bytes of device memory`);
}

/** The CUDA device holding addr, or -1 for host memory. */
function deviceOf(addr: number): number {
  if (!Number.isSafeInteger(addr) || addr < 0) throw new InvalidParamError('cuda.deviceOf takes an address (a whole number)');
  const dev = [-1];
  check(shim().cudaPointerDevice(addr, dev), 'looking up a pointer');
  return dev[0]!;
}

export const cuda = { deviceCount, write, read, fill, deviceOf };
