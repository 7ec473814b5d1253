/** The sweep's progress line: on stderr, only when a person watches it. */
export interface Progress {
  step(label: string): void;
  /** Erases the line, so that a table row written next starts clean. */
  clear(): void;
}

export function progressLine(total: number, enabled: boolean): Progress {
  if (!enabled || !process.stderr.isTTY) return { step() {}, clear() {} };
  let done = 0;
  return {
    step: (label) => process.stderr.write(`\r\x1b[Kixfer bench ${++done}/${total} ${label}`),
    clear: () => process.stderr.write('\r\x1b[K'),
  };
}
