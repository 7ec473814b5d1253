// A network namespace joined to this one by veth pairs, for rail failover
// tests and benchmarks (root and ip(8) needed): pair i has `${prefix}a${i}`
// here at <subnet(i)>.1 and `${prefix}b${i}` in the namespace at .2, so its
// traffic never leaves the two ends.
import { execFileSync } from 'node:child_process';

/** @param {string} prefix names the namespace and its links; @param {number} octet third octet of pair 0's 10.x.y.0/24 (x given by `net`) */
export function vethNamespace(prefix, net, octet, pairs = 2) {
  const ns = prefix;
  const link = (i, side) => `${prefix}${side}${i}`;
  const subnet = (i) => `10.${net}.${octet + i}`;
  const ip = (...args) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const each = [...Array(pairs).keys()];
  const remove = () => {
    for (const i of each) {
      try {
        ip('link', 'del', link(i, 'a'));
      } catch {
        // gone already
      }
    }
    try {
      ip('netns', 'del', ns);
    } catch {
      // never made
    }
  };
  /** Sets it up; returns why it cannot, or undefined. */
  const make = () => {
    try {
      ip('netns', 'add', ns);
    } catch (err) {
      return `cannot create a network namespace (${String(err.stderr ?? err).trim()}): needs root and ip(8)`;
    }
    try {
      for (const i of each) {
        ip('link', 'add', link(i, 'a'), 'type', 'veth', 'peer', 'name', link(i, 'b'));
        ip('link', 'set', link(i, 'b'), 'netns', ns);
        ip('addr', 'add', `${subnet(i)}.1/24`, 'dev', link(i, 'a'));
        ip('link', 'set', link(i, 'a'), 'up');
        ip('netns', 'exec', ns, 'ip', 'addr', 'add', `${subnet(i)}.2/24`, 'dev', link(i, 'b'));
        ip('netns', 'exec', ns, 'ip', 'link', 'set', link(i, 'b'), 'up');
      }
      ip('netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
    } catch (err) {
      remove();
      return `cannot set up veth pairs (${String(err.stderr ?? err).trim()})`;
    }
    return undefined;
  };
  /**
   * Takes pair i down or up at the namespace's end: ours loses its carrier
   * but keeps its routes, so nothing for the namespace goes out another way
   * (with our end down, the default route would take it).
   */
  const setLink = (i, state) => ip('netns', 'exec', ns, 'ip', 'link', 'set', link(i, 'b'), state);
  /** Resets the connections over pair i at both ends. */
  const reset = (i) => {
    execFileSync('ss', ['-K', 'dst', `${subnet(i)}.2`], { stdio: 'ignore' });
    ip('netns', 'exec', ns, 'ss', '-K', 'dst', `${subnet(i)}.1`);
  };
  return { ns, link, subnet, ip, make, remove, setLink, reset };
}
