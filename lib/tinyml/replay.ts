/**
 * Replay detection: genuine sensor noise makes every run of GRAM consecutive values unique, so a
 * run seen before means recorded data played back, whatever its timestamps say (a duplicate or
 * a time-shifted window). Runs are remembered in two rotating Bloom filters: bounded memory
 * (8 bits per remembered sample) and no false negatives within `memory` samples. A filter
 * answers "seen" falsely for at most ~5 % of fresh runs; a window needs half its runs seen.
 * Runs of one repeated value carry no entropy and are neither flagged nor remembered.
 */
export const GRAM = 16;
const PROBES = 4;
const BITS_PER_ENTRY = 8;

const float = new Float64Array(1);
const words = new Uint32Array(float.buffer);

function mix(hash: number, word: number): number {
  hash = Math.imul(hash ^ word, 0x5bd1e995);
  return hash ^ (hash >>> 15);
}

export class ReplayDetector {
  private readonly recent = new Float64Array(GRAM);
  private filled = 0;
  private current: Uint32Array;
  private previous: Uint32Array;
  private inserted = 0;
  private readonly capacity: number;
  private readonly mask: number;

  constructor(memory = 65536) {
    this.capacity = Math.max(64, Math.ceil(memory / 2));
    const bits = 2 ** Math.ceil(Math.log2(this.capacity * BITS_PER_ENTRY));
    this.mask = bits - 1;
    this.current = new Uint32Array(bits / 32);
    this.previous = new Uint32Array(bits / 32);
  }

  /** Bytes held by this detector, for the node's memory accounting. */
  get bytes(): number {
    return this.current.byteLength * 2;
  }

  /**
   * Takes the next value of the stream; true when the run of GRAM values ending at it was seen
   * before. The run is remembered either way.
   */
  observe(value: number): boolean {
    this.recent[this.filled % GRAM] = value;
    this.filled++;
    if (this.filled < GRAM) return false;
    let h1 = 0x9747b28c;
    let h2 = 0x85ebca6b;
    let varied = false;
    const first = this.recent[this.filled % GRAM];
    for (let i = 0; i < GRAM; i++) {
      const v = this.recent[(this.filled + i) % GRAM];
      if (v !== first) varied = true;
      float[0] = v;
      h1 = mix(mix(h1, words[0]), words[1]);
      h2 = mix(mix(h2, words[1]), words[0]);
    }
    if (!varied) return false;
    h2 |= 1;
    let seen = true;
    for (let p = 0; p < PROBES; p++) {
      const bit = (h1 + Math.imul(p, h2)) & this.mask;
      const word = bit >>> 5;
      const flag = 1 << (bit & 31);
      if ((this.current[word] & flag) === 0 && (this.previous[word] & flag) === 0) seen = false;
      this.current[word] |= flag;
    }
    if (++this.inserted >= this.capacity) this.rotate();
    return seen;
  }

  private rotate(): void {
    const recycled = this.previous;
    recycled.fill(0);
    this.previous = this.current;
    this.current = recycled;
    this.inserted = 0;
  }
}
