/**
 * CPU time and peak RSS of a process from /proc, so that every engine (Node
 * workers and the C baseline alike) is measured the same way from outside.
 */
import fs from 'node:fs';

/** CPU seconds of all threads of `pid` so far (schedstat: nanoseconds on CPU). */
export function cpuSeconds(pid: number): number {
  let ns = 0;
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // the thread ended between readdir and read
    }
  }
  return ns / 1e9;
}

/** Peak resident set (VmHWM) in bytes. */
export function peakRss(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** Restarts the peak-RSS count at the current RSS (proc(5): clear_refs 5), so a peak is per row. */
export function resetPeakRss(pid: number): void {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
  } catch {
    // not permitted: the peak then covers the process's whole life so far
  }
}
