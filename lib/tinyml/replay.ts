/**
 * Replay detection: genuine sensor noise makes every run of GRAM consecutive values unique, so a
 * run seen before means recorded data played back, whatever its timestamps say (a duplicate or
 * a time-shifted window). Runs are remembered in two rotating Bloom filters: bounded memory
 * (8 bits per remembered run, two runs a reading) and no false negatives within half of `memory`
 * readings. The filters answer "seen" falsely for up to ~10 % of fresh runs when full; a window
 * needs half of its informative runs seen.
 *
 * Only runs that carry MIN_BITS of change count (changes × log2 of the distinct values): a slow
 * signal behind coarse rounding repeats its runs by itself (0.1, 0.1, 0.2, 0.1, ...), and no
 * memory can tell its replay from the live stream. Such runs are neither flagged nor remembered.
 *
 * Each run is also remembered with the intervals between its readings. A genuine sensor's timing
 * jitter makes those runs unique even where its values are not (a coarse value behind a
 * µs-stamping clock), so played-back recordings with their own timestamps are caught too; an
 * attacker who re-stamps them is still caught by the values wherever they carry information.
 *
 * The filters can be saved and restored (`save`, `restore`), so a redeploy or a restart does not
 * forget what the source sent: a replay of its enrolment data is caught after it too.
 */
export const GRAM = 16;
/** Bits a run must carry (changes × log2 of distinct values) to be told from chance repeats. */
const MIN_BITS = 16;
const PROBES = 4;
const BITS_PER_ENTRY = 8;

const float = new Float64Array(1);
const words = new Uint32Array(float.buffer);

function mix(hash: number, word: number): number {
  hash = Math.imul(hash ^ word, 0x5bd1e995);
  return hash ^ (hash >>> 15);
}

export type RunVerdict = 'seen' | 'new' | 'uninformative';

export interface SavedReplayMemory {
  current: string;
  previous: string;
  inserted: number;
}

export class ReplayDetector {
  private readonly values = new Float64Array(GRAM);
  private readonly intervals = new Float64Array(GRAM);
  private filled = 0;
  private current: Uint32Array;
  private previous: Uint32Array;
  private inserted = 0;
  private readonly capacity: number;
  private readonly mask: number;

  constructor(memory = 65536) {
    // Two runs remembered per reading (values, and values with intervals).
    this.capacity = Math.max(64, memory);
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
   * Takes the next reading of the stream (its value, and the interval since the one before, NaN
   * when unknown) and says whether the run of GRAM readings ending at it was seen before, is new
   * (it is remembered either way), or carries too little change to tell.
   */
  observe(value: number, interval = Number.NaN): RunVerdict {
    const slot = this.filled % GRAM;
    this.values[slot] = value;
    this.intervals[slot] = interval;
    this.filled++;
    if (this.filled < GRAM) return 'uninformative';
    let valueHash = 0x9747b28c;
    let valueHash2 = 0x85ebca6b;
    let timedHash = 0x3c6ef372;
    let timedHash2 = 0xa54ff53a;
    let valueChanges = 0;
    let intervalChanges = 0;
    for (let i = 0; i < GRAM; i++) {
      const j = (this.filled + i) % GRAM;
      if (i > 0) {
        const before = (j + GRAM - 1) % GRAM;
        if (this.values[j] !== this.values[before]) valueChanges++;
        if (this.intervals[j] !== this.intervals[before] && Number.isFinite(this.intervals[j])) intervalChanges++;
      }
      float[0] = this.values[j];
      valueHash = mix(mix(valueHash, words[0]), words[1]);
      valueHash2 = mix(mix(valueHash2, words[1]), words[0]);
      timedHash = mix(mix(timedHash, words[0]), words[1]);
      timedHash2 = mix(mix(timedHash2, words[1]), words[0]);
      float[0] = this.intervals[j];
      timedHash = mix(mix(timedHash, words[0]), words[1]);
      timedHash2 = mix(mix(timedHash2, words[1]), words[0]);
    }
    const valueBits = valueChanges * Math.log2(Math.max(2, this.distinct(this.values)));
    const timingBits = intervalChanges * Math.log2(Math.max(2, this.distinct(this.intervals)));
    const byValue = valueBits >= MIN_BITS ? this.remember(valueHash, valueHash2) : undefined;
    const byTiming = valueBits + timingBits >= MIN_BITS ? this.remember(timedHash, timedHash2) : undefined;
    if (byValue === undefined && byTiming === undefined) return 'uninformative';
    return byValue || byTiming ? 'seen' : 'new';
  }

  /** Distinct values of a run: 120 comparisons, where sorting a copy cost more per reading than all the hashing. */
  private distinct(series: Float64Array): number {
    let count = 0;
    for (let i = 0; i < GRAM; i++) {
      let j = 0;
      while (j < i && series[j] !== series[i]) j++;
      if (j === i) count++;
    }
    return count;
  }

  /** Whether the run of these hashes was seen; remembers it either way. */
  private remember(h1: number, h2: number): boolean {
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

  /** The filters, for saving beside the profile. */
  save(): SavedReplayMemory {
    return {
      current: Buffer.from(this.current.buffer, this.current.byteOffset, this.current.byteLength).toString('base64'),
      previous: Buffer.from(this.previous.buffer, this.previous.byteOffset, this.previous.byteLength).toString(
        'base64',
      ),
      inserted: this.inserted,
    };
  }

  /** Takes back saved filters; false (and nothing changed) when they were saved for another size. */
  restore(saved: SavedReplayMemory): boolean {
    const current = Buffer.from(saved.current, 'base64');
    const previous = Buffer.from(saved.previous, 'base64');
    if (current.byteLength !== this.current.byteLength || previous.byteLength !== this.previous.byteLength)
      return false;
    this.current.set(
      new Uint32Array(current.buffer.slice(current.byteOffset, current.byteOffset + current.byteLength)),
    );
    this.previous.set(
      new Uint32Array(previous.buffer.slice(previous.byteOffset, previous.byteOffset + previous.byteLength)),
    );
    this.inserted = Math.min(Math.max(0, Math.floor(saved.inserted)), this.capacity - 1);
    return true;
  }
}
