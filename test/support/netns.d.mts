/** Types of netns.mjs (plain JavaScript: scripts/rail-failover-bench.mjs imports it too). */
export interface VethNamespace {
  ns: string;
  link(i: number, side: 'a' | 'b'): string;
  subnet(i: number): string;
  ip(...args: string[]): Buffer;
  make(): string | undefined;
  remove(): void;
  setLink(i: number, state: 'up' | 'down'): void;
  reset(i: number): void;
}
export function vethNamespace(prefix: string, net: number, octet: number, pairs?: number): VethNamespace;
