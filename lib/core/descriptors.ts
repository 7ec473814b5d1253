/**
 * Descriptor lists as bytes, for sending to a peer (like NIXL's serialized
 * descriptor lists). Layout: "IXDL" u16 version u16 reserved u32 count, then
 * count x { u64 addr, u64 len, u16 devId, u16 reserved, u32 reserved }.
 */
import { InvalidParamError } from '../errors.js';
import { parseDescriptors, type Descriptor, type ParsedDescriptor } from '../schemas.js';

const MAGIC = 0x4c445849; // "IXDL" as little-endian u32
const VERSION = 1;
const HEADER = 12;
const ENTRY = 24;

export function serializeDescriptors(descriptors: Descriptor[]): Uint8Array {
  const descs = parseDescriptors(descriptors, 'descriptors');
  // What deserializeDescriptors refuses is refused here.
  descs.forEach((d, i) => {
    if (d.addr + d.len > Number.MAX_SAFE_INTEGER) throw new InvalidParamError(`descriptors[${i}] ends beyond 2^53`);
  });
  const out = Buffer.alloc(HEADER + descs.length * ENTRY);
  out.writeUInt32LE(MAGIC, 0);
  out.writeUInt16LE(VERSION, 4);
  out.writeUInt32LE(descs.length, 8);
  descs.forEach((d, i) => {
    const o = HEADER + i * ENTRY;
    out.writeBigUInt64LE(BigInt(d.addr), o);
    out.writeBigUInt64LE(BigInt(d.len), o + 8);
    out.writeUInt16LE(d.devId, o + 16);
  });
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

export function deserializeDescriptors(bytes: Uint8Array): ParsedDescriptor[] {
  const bad = (why: string) => new InvalidParamError(`invalid descriptor list: ${why}`);
  if (!(bytes instanceof Uint8Array)) throw bad('expected a Uint8Array');
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.length < HEADER) throw bad(`${b.length} bytes is shorter than the header`);
  if (b.readUInt32LE(0) !== MAGIC) throw bad('wrong magic');
  const version = b.readUInt16LE(4);
  if (version !== VERSION) throw bad(`version ${version}, this ixfer reads ${VERSION}`);
  const count = b.readUInt32LE(8);
  if (b.length !== HEADER + count * ENTRY) throw bad(`${count} entries need ${HEADER + count * ENTRY} bytes, got ${b.length}`);
  const max = BigInt(Number.MAX_SAFE_INTEGER);
  const out: ParsedDescriptor[] = [];
  for (let i = 0; i < count; i++) {
    const o = HEADER + i * ENTRY;
    const addr = b.readBigUInt64LE(o);
    const len = b.readBigUInt64LE(o + 8);
    if (addr + len > max) throw bad(`entry ${i} ends beyond 2^53`);
    out.push({ addr: Number(addr), len: Number(len), devId: b.readUInt16LE(o + 16) });
  }
  return out;
}
