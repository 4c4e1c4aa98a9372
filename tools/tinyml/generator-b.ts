/*
 * generator-b.ts — independent generator of industrial sensor streams for
 * EVALUATING (never training) a device-behaviour model.
 *
 * Written separately from the training simulator (./simulator.ts), from sensor physics, by an
 * author who did not read it: its own structure, parameter ranges and process models. Used only
 * by the evaluation (./evaluate.ts, `npm run eval-model`); the model card summarises its physics.
 *
 * Time conventions
 *   - Internally all physics runs on a "true time" axis in seconds, t = 0 at the
 *     case epoch. Output times are milliseconds on the same axis (relative, so a
 *     double keeps ~1e-8 ms resolution even for the longest 0.1 Hz cases).
 *   - To get wall-clock times add caseEpochMs(caseIndex) = EPOCH_MS + index*CASE_SPACING_MS.
 *     (At 1.7e12 ms a double only resolves ~0.24 us, which is why we do not add it.)
 *   - sourceTimes: the unit's own timestamps (ms). arrivalTimes: gateway clock (ms).
 */

export interface Stream {
  values: Float64Array;
  sourceTimes: Float64Array;
  arrivalTimes: Float64Array;
}
export interface Case {
  id: string;
  kind: string;
  rateHz: number;
  bits: number;
  enrol: Stream;
  genuine: Stream;
  sameModel: Stream;
  simulator: Stream;
}
export interface GenerateOptions {
  seed: number;
  cases: number;
  enrolSamples: number;
  testSamples: number;
  laterHours?: number;
  warmerK?: number;
}

/** Nominal wall-clock epoch of case 0 (ms since 1970); times in a Case are relative to caseEpochMs(index). */
export const EPOCH_MS = 1_700_000_000_000;
/** Nominal spacing between case epochs (one day). */
export const CASE_SPACING_MS = 86_400_000;
export function caseEpochMs(caseIndex: number): number {
  return EPOCH_MS + caseIndex * CASE_SPACING_MS;
}

export const KINDS = ['pressure', 'temperature-rtd', 'temperature-tc', 'vibration', 'flow', 'level', 'power'] as const;
type Kind = (typeof KINDS)[number];

const TWO_PI = 2 * Math.PI;

// ---------------------------------------------------------------------------
// PRNG: sfc32 seeded through a murmur-style mixer; Box–Muller normals.
// Every independent purpose gets its own sub-stream keyed by (seed, case, tag)
// so e.g. unit parameters do not change when sample counts change.
// ---------------------------------------------------------------------------
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  private spare = 0;
  private hasSpare = false;
  constructor(...keys: number[]) {
    let h = 0x243f6a88;
    for (const k of keys) {
      const lo = k >>> 0;
      const hi = (Math.floor(Math.abs(k) / 4294967296) >>> 0) ^ (k < 0 ? 0x80000000 : 0);
      h = fmix32(h ^ fmix32(lo + 0x9e3779b9));
      h = fmix32((h + 0x7f4a7c15) ^ fmix32(hi ^ 0x85ebca6b));
    }
    this.a = fmix32(h ^ 0x1b873593);
    this.b = fmix32(h ^ 0xcc9e2d51);
    this.c = fmix32(h ^ 0xe6546b64);
    this.d = 1;
    for (let i = 0; i < 15; i++) this.next();
  }
  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return (t >>> 0) / 4294967296;
  }
  normal(): number {
    if (this.hasSpare) {
      this.hasSpare = false;
      return this.spare;
    }
    const u1 = 1 - this.next();
    const u2 = this.next();
    const r = Math.sqrt(-2 * Math.log(u1));
    this.spare = r * Math.sin(TWO_PI * u2);
    this.hasSpare = true;
    return r * Math.cos(TWO_PI * u2);
  }
  uniform(a: number, b: number): number {
    return a + (b - a) * this.next();
  }
  logUniform(a: number, b: number): number {
    return Math.exp(this.uniform(Math.log(a), Math.log(b)));
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  bool(p: number): boolean {
    return this.next() < p;
  }
  sign(): number {
    return this.next() < 0.5 ? -1 : 1;
  }
  exp(mean: number): number {
    return -mean * Math.log(1 - this.next());
  }
  lognormal(sigma: number): number {
    return Math.exp(sigma * this.normal());
  }
  pick<T>(arr: readonly T[]): T {
    return arr[this.int(arr.length)];
  }
  weighted<T>(arr: readonly T[], w: readonly number[]): T {
    let s = 0;
    for (const x of w) s += x;
    let u = this.next() * s;
    for (let i = 0; i < arr.length; i++) {
      u -= w[i];
      if (u < 0) return arr[i];
    }
    return arr[arr.length - 1];
  }
}

/** Exact Ornstein–Uhlenbeck step (stationary std sigma, time constant tau) over dt. */
function ouStep(x: number, dt: number, tau: number, sigma: number, rng: Rng): number {
  if (sigma === 0) return 0;
  if (!(tau > 0)) return sigma * rng.normal();
  const a = Math.exp(-dt / tau);
  return x * a + sigma * Math.sqrt(Math.max(0, 1 - a * a)) * rng.normal();
}

const clamp = (x: number, lo: number, hi: number): number => (x < lo ? lo : Math.min(x, hi));

// ---------------------------------------------------------------------------
// Model structures
// ---------------------------------------------------------------------------
type CycleShape = 'square' | 'saw' | 'batch' | 'sine';

interface ProcessSpec {
  levels: number[]; // absolute machine-state levels (eng units)
  levelJitter: number; // per-visit setpoint scatter (eng units, or relative for mul)
  meanDwell: number; // s, mean time in a state (Infinity = single state)
  transTau: number; // s, first-order response of the process to state/cycle changes
  cycle: {
    shape: CycleShape;
    mode: 'add' | 'mul';
    period: number;
    amp: number;
    duty: number;
    jitter: number;
    ampJitter: number;
  } | null;
  trendPerHour: number; // eng units / h
  drift: { sigma: number; tau: number }; // slow OU drift, eng units
  noise: { sigma: number; tau: number; multiplicative: boolean }; // process noise (turbulence etc.)
  pulsation: {
    freq: number;
    amp: number;
    wanderFrac: number;
    wanderPeriod: number;
    wanderPhase: number;
    phase: number;
  } | null;
  spikes: { ratePerHour: number; amp: number; decay: number; oscHz: number; signed: boolean } | null;
  floor: number | null; // physical lower bound
}

interface NetSpec {
  base: number; // s, fixed transport/processing latency
  jitter: number; // s, scale of random latency
  jitterLogSigma: number; // 0 => exponential jitter, >0 => lognormal with this sigma
  pollQ: number; // s, gateway poll period (0 => push)
  batch: number; // samples per message (1 => none)
  congRatePerHour: number;
  congDur: number;
  congExtra: number;
  serial: number; // s, minimum spacing of consecutive receptions
  gwOffset: number; // s, gateway clock offset vs true time
  gwPpm: number; // gateway clock rate error (NTP-disciplined host)
}

interface Installation {
  kind: Kind;
  unitName: string;
  rateHz: number;
  Ps: number;
  bits: number;
  lo: number;
  hi: number;
  span: number;
  adcLo: number;
  adcHi: number;
  lsb: number;
  maxCode: number;
  mainsHz: number;
  mainsPhase0: number;
  gridAmps: number[];
  gridPeriods: number[];
  gridPhases: number[];
  ambient0: number;
  ambAmps: number[];
  ambPeriods: number[];
  ambPhases: number[];
  roundDecimals: number | null; // firmware rounding to 10^-d (d may be negative: 10, 100 ...)
  float32: boolean;
  dampTau: number; // s, firmware output damping (0 = off)
  lowCutoff: number; // eng units, flow low-flow cut-off (0 = off)
  clampNonNeg: boolean;
  digitalCal: boolean;
  timing: 'grid' | 'resched';
  stampRes: number; // s, resolution of the unit's timestamps
  tIntNom: number; // s, ADC integration window in the unit's clock (0 = sample & hold)
  procDelay: number; // s, conversion/processing before transmission
  dropRate: number;
  net: NetSpec;
  proc: ProcessSpec;
  // model-level ("same model") parameter centres
  osc: 'quartz' | 'mems' | 'rc';
  tolPpm: number;
  wanderSigma: number;
  wanderTau: number;
  noiseFrac: number;
  flickerRatio: number;
  lagTau: number;
  selfHeat: number;
  jitterScale: number;
  d0: number;
  gainAnalogSigma: number;
  gainResSigma: number;
  offAnalogSigma: number;
  offResSigma: number;
  gainTcSigma: number;
  offTcSigma: number;
  inlMax: number;
  dnlLsb: number;
  pickupFrac: number;
  cjcSigma: number;
  glitchRatePerHour: number;
  glitchAmp: number;
  syncErr: number;
}

interface Unit {
  e0: number;
  k2: number;
  T0: number;
  k1: number;
  wanderSigma: number;
  wanderTau: number;
  selfHeat: number;
  tCal: number;
  gA: number;
  oA: number;
  cG: number;
  cO: number;
  gTc: number;
  oTc: number;
  cjc: number;
  inl: number;
  dnl: number;
  dnlSeed: number;
  noiseWhite: number;
  flickerSigma: number; // per-component std
  pickAmp: number;
  pickPhase: number;
  h3: number;
  h3Phase: number;
  lagTau: number;
  jitter: number;
  d0: number;
  glitchRatePerHour: number;
}

interface UnitState {
  wander: number;
  fl: Float64Array;
  lastT: number;
}
const FLICKER_TAUS = [0.3, 3, 30, 300, 3000];

interface Events {
  stateTimes: number[];
  stateVals: number[];
  cycStarts: number[];
  cycPeriods: number[];
  cycAmps: number[];
  spikeTimes: number[];
  spikeAmps: number[];
  spikeDecays: number[];
  maxSpikeDur: number;
}

interface Grid {
  t0: number;
  dt: number;
  x: Float64Array;
}
interface ProcCarry {
  t: number;
  drift: number;
}

// ---------------------------------------------------------------------------
// Installation (site + firmware configuration + process + model-level centres)
// ---------------------------------------------------------------------------
function niceRound(x: number): number {
  const e = Math.floor(Math.log10(x));
  const m = x / 10 ** e;
  const nice = m < 1.5 ? 1 : m < 3.5 ? 2.5 : m < 7.5 ? 5 : 10;
  return nice * 10 ** e;
}

function makeInstallation(kind: Kind, r: Rng): Installation {
  // ---- per-kind range, rate, bits ----
  let lo = 0,
    hi = 1,
    unitName = '';
  let rates: number[] = [],
    rateW: number[] = [],
    bitsList: number[] = [],
    bitsW: number[] = [];
  switch (kind) {
    case 'pressure': {
      unitName = 'bar';
      hi = r.pick([1, 2.5, 6, 10, 16, 25, 40, 100, 250]);
      lo = r.bool(0.15) ? -1 : 0;
      rates = [1, 2, 5, 10, 20, 50, 100];
      rateW = [1, 2, 3, 4, 3, 2, 2];
      bitsList = [12, 14, 16, 18, 20, 24];
      bitsW = [2, 2, 4, 2, 2, 3];
      break;
    }
    case 'temperature-rtd': {
      unitName = 'degC';
      [lo, hi] = r.pick([
        [-50, 150],
        [0, 100],
        [0, 200],
        [-200, 600],
        [-30, 70],
        [0, 400],
      ] as [number, number][]);
      rates = [0.1, 0.2, 0.5, 1, 2, 5, 10];
      rateW = [2, 2, 2, 4, 2, 1, 1];
      bitsList = [16, 18, 20, 24];
      bitsW = [3, 1, 2, 4];
      break;
    }
    case 'temperature-tc': {
      unitName = 'degC';
      [lo, hi] = r.pick([
        [0, 1200],
        [0, 800],
        [0, 1600],
        [-50, 400],
        [0, 1000],
      ] as [number, number][]);
      rates = [0.2, 0.5, 1, 2, 5, 10, 20];
      rateW = [1, 2, 4, 2, 2, 1, 1];
      bitsList = [14, 16, 18, 20, 24];
      bitsW = [1, 3, 1, 2, 3];
      break;
    }
    case 'vibration': {
      unitName = 'mm/s';
      hi = r.pick([10, 20, 25, 50, 100]);
      lo = 0;
      rates = [1, 2, 5, 10, 20, 50, 100];
      rateW = [4, 2, 2, 3, 1, 1, 1];
      bitsList = [10, 12, 14, 16];
      bitsW = [2, 4, 2, 3];
      break;
    }
    case 'flow': {
      unitName = 'm3/h';
      hi = niceRound(r.logUniform(1, 2000));
      lo = 0;
      rates = [0.5, 1, 2, 5, 10, 20, 50, 100];
      rateW = [1, 4, 2, 3, 3, 1, 1, 1];
      bitsList = [12, 14, 16, 20, 24];
      bitsW = [2, 2, 4, 2, 2];
      break;
    }
    case 'level': {
      unitName = 'm';
      hi = r.pick([1, 2, 3, 5, 8, 10, 15, 20, 30]);
      lo = 0;
      rates = [0.1, 0.2, 0.5, 1, 2, 5, 10];
      rateW = [2, 2, 2, 4, 2, 2, 1];
      bitsList = [10, 12, 14, 16, 20];
      bitsW = [1, 3, 2, 4, 1];
      break;
    }
    case 'power': {
      unitName = 'kW';
      hi = r.pick([5, 10, 22, 55, 110, 250, 500, 1000, 2000]);
      lo = 0;
      rates = [0.2, 0.5, 1, 2, 5, 10, 25, 50];
      rateW = [1, 2, 5, 2, 2, 2, 1, 1];
      bitsList = [16, 20, 24];
      bitsW = [3, 2, 3];
      break;
    }
  }
  const span = hi - lo;
  const rateHz = r.weighted(rates, rateW);
  const Ps = 1 / rateHz;
  const bits = r.weighted(bitsList, bitsW);
  const margin = r.uniform(0, 0.1);
  const adcLo = lo - margin * span * r.uniform(0.2, 1),
    adcHi = hi + margin * span;
  const maxCode = 2 ** bits - 1;
  const lsb = (adcHi - adcLo) / 2 ** bits;

  // ---- site ----
  const mainsHz = r.bool(0.6) ? 50 : 60;
  const gridTotal = r.logUniform(0.004, 0.04); // Hz, std of grid frequency deviation
  const gridAmps: number[] = [],
    gridPeriods: number[] = [],
    gridPhases: number[] = [];
  for (let i = 0; i < 3; i++) {
    gridAmps.push(gridTotal * r.uniform(0.4, 1));
    gridPeriods.push(r.logUniform(30, 1800));
    gridPhases.push(r.uniform(0, TWO_PI));
  }
  const ambient0 = r.uniform(-5, 40);
  const ambAmps: number[] = [],
    ambPeriods: number[] = [],
    ambPhases: number[] = [];
  for (let i = 0; i < 2; i++) {
    ambAmps.push(r.logUniform(0.05, 1.5));
    ambPeriods.push(r.logUniform(1200, 21600));
    ambPhases.push(r.uniform(0, TWO_PI));
  }

  // ---- firmware / output representation (shared by all units of this installation) ----
  let roundDecimals: number | null = null;
  let float32 = false;
  const pRound = kind === 'power' ? 0.7 : kind === 'level' ? 0.55 : 0.4;
  if (r.bool(pRound)) {
    const step = span * 10 ** r.uniform(-4.7, -2.2);
    roundDecimals = -Math.round(Math.log10(step));
  } else if (r.bool(0.25)) float32 = true;
  const dampTau = r.bool(0.3) ? r.logUniform(0.1, 5) : 0;
  const lowCutoff = kind === 'flow' && r.bool(0.5) ? span * r.uniform(0.005, 0.02) : 0;
  const clampNonNeg = (kind === 'vibration' || kind === 'flow' || kind === 'level' || kind === 'power') && r.bool(0.5);
  const digitalCal = r.bool(0.6);
  const timing: 'grid' | 'resched' = r.bool(0.6) ? 'grid' : 'resched';
  const stampRes = r.weighted([1e-6, 1e-5, 1e-4, 1e-3], [35, 10, 10, 45]);

  // ADC integration window (in the unit's own clock)
  let tIntNom: number;
  const mode = r.weighted(['sh', 'mains', 'fixed'], [30, 40, 30]);
  const designMains = r.bool(0.85) ? mainsHz : mainsHz === 50 ? 60 : 50;
  if (kind === 'power') {
    const cycles = r.pick([1, 2, 5, 10, 12]);
    tIntNom = Math.min(cycles / mainsHz, Ps); // power meters integrate over mains cycles
  } else if (mode === 'sh') tIntNom = r.logUniform(1e-6, 2e-5);
  else if (mode === 'mains' && 1 / designMains <= Ps * 0.999) {
    const maxN = Math.max(1, Math.floor(Ps * 0.999 * designMains));
    tIntNom = Math.min(r.pick([1, 1, 1, 2, 5]), maxN) / designMains;
  } else {
    const opts = [0.001, 0.0025, 0.005, 0.01, 0.05, 0.1].filter(x => x <= Ps * 0.9);
    tIntNom = opts.length ? r.pick(opts) : Ps * r.uniform(0.1, 0.9);
  }
  const procDelay = r.logUniform(5e-5, 5e-3) + tIntNom * 0.1;
  const dropRate = r.bool(0.3) ? r.logUniform(1e-4, 3e-3) : 0;

  // ---- network to gateway ----
  const pollMax = Math.min(0.1, 0.5 * Ps);
  const net: NetSpec = {
    base: r.logUniform(1e-4, 0.02),
    jitter: r.logUniform(1e-4, 0.02),
    jitterLogSigma: r.bool(0.5) ? 0 : r.uniform(0.3, 1.2),
    pollQ: r.bool(0.35) && pollMax >= 0.001 ? r.logUniform(0.001, pollMax) : 0,
    batch: r.bool(0.15) ? r.pick([2, 4, 5, 8, 10, 16, 20]) : 1,
    congRatePerHour: r.bool(0.5) ? r.logUniform(0.5, 30) : 0,
    congDur: r.logUniform(0.1, 5),
    congExtra: r.logUniform(0.01, 0.3),
    serial: r.logUniform(5e-6, 2e-4),
    gwOffset: r.uniform(-0.05, 0.05),
    gwPpm: r.uniform(-5, 5),
  };

  // ---- model-level centres (shared by units of this model) ----
  const osc = r.weighted(['quartz', 'mems', 'rc'] as const, [70, 15, 15]);
  // RC: an MCU's internal oscillator: ±1 % factory-trimmed at 25 °C (STM32 HSI), ±1 % only after
  // user calibration (ATmega328P, ±10 % as shipped).
  const tolPpm =
    osc === 'quartz' ? r.pick([10, 20, 30, 50, 100]) : osc === 'mems' ? r.pick([20, 50, 100]) : r.pick([5000, 10000, 20000]);
  const wanderSigma =
    osc === 'quartz' ? r.logUniform(0.002, 0.05) : osc === 'mems' ? r.logUniform(0.01, 0.3) : r.logUniform(0.3, 5);
  const wanderTau = osc === 'rc' ? r.logUniform(1, 60) : r.logUniform(10, 600);
  const jitterCap = Math.min(3e-3, 0.03 * Ps);
  const jitterScale = r.logUniform(1e-6, jitterCap);

  let noiseLo = 1e-5,
    noiseHi = 5e-4,
    lagLo = 1e-3,
    lagHi = 0.2,
    pickLo = 1e-6,
    pickHi = 1e-3,
    cjcSigma = 0;
  switch (kind) {
    case 'pressure':
      noiseLo = 1e-5;
      noiseHi = 5e-4;
      lagLo = 1e-3;
      lagHi = 0.2;
      break;
    case 'temperature-rtd':
      noiseLo = 1e-5;
      noiseHi = 2.5e-4;
      lagLo = 2;
      lagHi = 40;
      break;
    case 'temperature-tc':
      noiseLo = 2e-5;
      noiseHi = 4e-4;
      lagLo = 0.5;
      lagHi = 20;
      pickLo = 3e-6;
      pickHi = 3e-3;
      cjcSigma = r.logUniform(0.005, 0.05);
      break;
    case 'vibration':
      noiseLo = 1e-4;
      noiseHi = 2e-3;
      lagLo = 0.1;
      lagHi = 2;
      break;
    case 'flow':
      noiseLo = 3e-5;
      noiseHi = 1e-3;
      lagLo = 0.01;
      lagHi = 1;
      break;
    case 'level':
      noiseLo = 3e-5;
      noiseHi = 1e-3;
      lagLo = 0.2;
      lagHi = 5;
      break;
    case 'power':
      noiseLo = 1e-5;
      noiseHi = 3e-4;
      lagLo = 1e-3;
      lagHi = 0.05;
      pickLo = 1e-8;
      pickHi = 1e-5;
      break;
  }

  const proc = makeProcess(kind, r, lo, hi, span);

  return {
    kind,
    unitName,
    rateHz,
    Ps,
    bits,
    lo,
    hi,
    span,
    adcLo,
    adcHi,
    lsb,
    maxCode,
    mainsHz,
    mainsPhase0: r.next(),
    gridAmps,
    gridPeriods,
    gridPhases,
    ambient0,
    ambAmps,
    ambPeriods,
    ambPhases,
    roundDecimals,
    float32,
    dampTau,
    lowCutoff,
    clampNonNeg,
    digitalCal,
    timing,
    stampRes,
    tIntNom,
    procDelay,
    dropRate,
    net,
    proc,
    osc,
    tolPpm,
    wanderSigma,
    wanderTau,
    noiseFrac: r.logUniform(noiseLo, noiseHi),
    flickerRatio: r.logUniform(0.05, 1.0),
    lagTau: r.logUniform(lagLo, lagHi),
    selfHeat: r.uniform(1, 10),
    jitterScale,
    d0: r.logUniform(2e-6, 3e-4),
    gainAnalogSigma: r.logUniform(0.002, 0.02),
    gainResSigma: r.logUniform(5e-5, 2e-3),
    offAnalogSigma: r.logUniform(1e-3, 1e-2),
    offResSigma: r.logUniform(2e-5, 1e-3),
    gainTcSigma: r.logUniform(5, 100) * 1e-6,
    offTcSigma: r.logUniform(0.5, 20) * 1e-6,
    inlMax: r.logUniform(1e-5, 5e-4),
    dnlLsb: r.uniform(0.02, 0.35),
    pickupFrac: r.logUniform(pickLo, pickHi),
    cjcSigma,
    glitchRatePerHour: r.bool(0.4) ? r.logUniform(0.1, 5) : 0,
    glitchAmp: r.logUniform(0.002, 0.05),
    syncErr: r.logUniform(1e-5, 3e-3),
  };
}

function makeProcess(kind: Kind, r: Rng, lo: number, hi: number, span: number): ProcessSpec {
  const p: ProcessSpec = {
    levels: [lo + span * r.uniform(0.2, 0.8)],
    levelJitter: 0,
    meanDwell: Infinity,
    transTau: 1,
    cycle: null,
    trendPerHour: 0,
    drift: { sigma: span * r.logUniform(1e-3, 2e-2), tau: r.logUniform(300, 7200) },
    noise: { sigma: span * r.logUniform(1e-4, 5e-3), tau: r.logUniform(0.005, 1), multiplicative: false },
    pulsation: null,
    spikes: null,
    floor: null,
  };
  const mkPuls = (): ProcessSpec['pulsation'] => ({
    freq: r.logUniform(5, 150),
    amp: span * r.logUniform(1e-4, 3e-3),
    wanderFrac: r.logUniform(1e-4, 5e-3),
    wanderPeriod: r.logUniform(20, 600),
    wanderPhase: r.uniform(0, TWO_PI),
    phase: r.next(),
  });
  switch (kind) {
    case 'pressure': {
      const k = r.pick([1, 2, 2, 3]);
      const mid = lo + span * r.uniform(0.25, 0.75);
      p.levels = [mid];
      for (let i = 1; i < k; i++) p.levels.push(mid + r.sign() * span * r.uniform(0.02, 0.25));
      p.levelJitter = span * r.logUniform(1e-3, 1e-2);
      p.meanDwell = k > 1 ? r.logUniform(30, 3600) : Infinity;
      p.transTau = r.logUniform(0.05, 5);
      if (r.bool(0.35))
        p.cycle = {
          shape: 'saw',
          mode: 'add',
          period: r.logUniform(20, 1200),
          amp: span * r.uniform(0.05, 0.2),
          duty: r.uniform(0.2, 0.8),
          jitter: r.uniform(0.05, 0.2),
          ampJitter: r.uniform(0.01, 0.1),
        };
      if (r.bool(0.4)) p.pulsation = mkPuls();
      if (r.bool(0.5))
        p.spikes = {
          ratePerHour: r.logUniform(0.1, 20),
          amp: span * r.uniform(0.01, 0.15),
          decay: r.logUniform(0.05, 1),
          oscHz: r.uniform(2, 20),
          signed: true,
        };
      break;
    }
    case 'temperature-rtd': {
      const base = lo + span * r.uniform(0.15, 0.7);
      p.levels = [base];
      if (r.bool(0.4)) {
        p.levels.push(base + r.sign() * span * r.uniform(0.01, 0.1));
        p.meanDwell = r.logUniform(600, 10800);
      }
      p.levelJitter = span * r.logUniform(2e-4, 3e-3);
      p.transTau = r.logUniform(60, 1800);
      if (r.bool(0.5))
        p.cycle = {
          shape: r.pick(['saw', 'sine'] as const),
          mode: 'add',
          period: r.logUniform(300, 3600),
          amp: span * r.uniform(0.005, 0.04),
          duty: r.uniform(0.3, 0.7),
          jitter: r.uniform(0.05, 0.25),
          ampJitter: r.uniform(0.02, 0.15),
        };
      p.drift = { sigma: span * r.logUniform(2e-3, 3e-2), tau: r.logUniform(3600, 21600) };
      p.noise = { sigma: span * r.logUniform(2e-5, 1e-3), tau: r.logUniform(2, 60), multiplicative: false };
      if (r.bool(0.1))
        p.spikes = {
          ratePerHour: r.logUniform(0.1, 2),
          amp: span * r.uniform(0.002, 0.02),
          decay: r.logUniform(10, 120),
          oscHz: 0,
          signed: true,
        };
      break;
    }
    case 'temperature-tc': {
      const base = lo + span * r.uniform(0.3, 0.7);
      p.levels = [base];
      if (r.bool(0.3)) {
        p.levels.push(base + r.sign() * span * r.uniform(0.02, 0.1));
        p.meanDwell = r.logUniform(600, 7200);
      }
      p.levelJitter = span * r.logUniform(5e-4, 5e-3);
      p.transTau = r.logUniform(30, 600);
      if (r.bool(0.6)) {
        if (r.bool(0.6))
          p.cycle = {
            shape: 'batch',
            mode: 'add',
            period: r.logUniform(1200, 14400),
            amp: span * r.uniform(0.1, 0.5),
            duty: r.uniform(0.5, 0.75),
            jitter: r.uniform(0.02, 0.15),
            ampJitter: r.uniform(0.01, 0.08),
          };
        else
          p.cycle = {
            shape: 'square',
            mode: 'add',
            period: r.logUniform(60, 900),
            amp: span * r.uniform(0.005, 0.03),
            duty: r.uniform(0.3, 0.7),
            jitter: r.uniform(0.05, 0.3),
            ampJitter: r.uniform(0.02, 0.1),
          };
      }
      p.drift = { sigma: span * r.logUniform(2e-3, 2e-2), tau: r.logUniform(1800, 14400) };
      p.noise = { sigma: span * r.logUniform(1e-4, 2e-3), tau: r.logUniform(0.5, 10), multiplicative: false };
      break;
    }
    case 'vibration': {
      const run = span * r.uniform(0.05, 0.4);
      const idle = run * r.uniform(0.1, 0.3);
      p.levels = r.bool(0.5) ? [0, idle, run] : r.bool(0.5) ? [idle, run] : [run];
      p.meanDwell = p.levels.length > 1 ? r.logUniform(60, 7200) : Infinity;
      p.levelJitter = r.uniform(0.01, 0.1); // relative
      p.transTau = r.logUniform(0.5, 10);
      p.drift = { sigma: run * r.logUniform(0.005, 0.05), tau: r.logUniform(600, 7200) };
      p.noise = { sigma: r.uniform(0.03, 0.15), tau: r.logUniform(0.2, 5), multiplicative: true };
      p.trendPerHour = run * r.uniform(0, 0.01);
      if (r.bool(0.6))
        p.spikes = {
          ratePerHour: r.logUniform(1, 60),
          amp: span * r.uniform(0.05, 0.3),
          decay: r.logUniform(0.05, 0.5),
          oscHz: 0,
          signed: false,
        };
      p.floor = 0;
      break;
    }
    case 'flow': {
      const k = r.pick([1, 2, 3]);
      p.levels = [];
      for (let i = 0; i < k; i++) p.levels.push(span * r.uniform(0.2, 0.9));
      if (r.bool(0.4)) p.levels.push(0);
      p.meanDwell = p.levels.length > 1 ? r.logUniform(60, 3600) : Infinity;
      p.levelJitter = r.uniform(0.005, 0.03);
      p.transTau = r.logUniform(0.2, 10);
      if (r.bool(0.3))
        p.cycle = {
          shape: 'square',
          mode: 'mul',
          period: r.logUniform(30, 1800),
          amp: r.uniform(0.5, 1),
          duty: r.uniform(0.1, 0.9),
          jitter: r.uniform(0.02, 0.2),
          ampJitter: 0,
        };
      p.noise = { sigma: r.uniform(0.003, 0.03), tau: r.logUniform(0.02, 1), multiplicative: true };
      p.drift = { sigma: span * r.logUniform(1e-3, 1e-2), tau: r.logUniform(300, 3600) };
      if (r.bool(0.3)) p.pulsation = mkPuls();
      if (r.bool(0.15))
        p.spikes = {
          ratePerHour: r.logUniform(0.2, 5),
          amp: span * r.uniform(0.01, 0.1),
          decay: r.logUniform(0.1, 2),
          oscHz: 0,
          signed: true,
        };
      p.floor = 0;
      break;
    }
    case 'level': {
      const amp = span * r.uniform(0.2, 0.7);
      p.levels = [lo + span * 0.5];
      p.transTau = r.logUniform(1, 30);
      if (r.bool(0.7))
        p.cycle = {
          shape: 'saw',
          mode: 'add',
          period: r.logUniform(600, 14400),
          amp,
          duty: r.uniform(0.1, 0.7),
          jitter: r.uniform(0.05, 0.3),
          ampJitter: r.uniform(0.02, 0.15),
        };
      else {
        p.levels = [lo + span * r.uniform(0.2, 0.8)];
      }
      p.drift = { sigma: span * r.logUniform(2e-3, 3e-2), tau: r.logUniform(600, 7200) };
      p.noise = { sigma: span * r.logUniform(1e-4, 3e-3), tau: r.logUniform(0.3, 5), multiplicative: false };
      if (r.bool(0.2))
        p.spikes = {
          ratePerHour: r.logUniform(0.5, 10),
          amp: span * r.uniform(0.01, 0.1),
          decay: r.logUniform(0.5, 5),
          oscHz: 0,
          signed: true,
        };
      p.floor = lo;
      break;
    }
    case 'power': {
      const k = r.pick([2, 3, 4]);
      p.levels = [];
      for (let i = 0; i < k; i++) p.levels.push(span * r.uniform(0.05, 0.8));
      if (r.bool(0.4)) p.levels.push(span * r.uniform(0.005, 0.03));
      p.meanDwell = r.logUniform(30, 3600);
      p.levelJitter = r.uniform(0.01, 0.05);
      p.transTau = r.logUniform(0.2, 5);
      if (r.bool(0.4))
        p.cycle = {
          shape: 'square',
          mode: 'mul',
          period: r.logUniform(60, 1800),
          amp: r.uniform(0.3, 0.9),
          duty: r.uniform(0.2, 0.8),
          jitter: r.uniform(0.05, 0.3),
          ampJitter: 0,
        };
      p.noise = { sigma: r.uniform(0.005, 0.04), tau: r.logUniform(0.1, 5), multiplicative: true };
      p.drift = { sigma: span * r.logUniform(1e-3, 1e-2), tau: r.logUniform(300, 3600) };
      if (r.bool(0.5))
        p.spikes = {
          ratePerHour: r.logUniform(0.5, 20),
          amp: span * r.uniform(0.05, 0.4),
          decay: r.logUniform(0.2, 3),
          oscHz: 0,
          signed: false,
        };
      p.floor = 0;
      break;
    }
  }
  // keep the process inside the range
  if (p.cycle && p.cycle.mode === 'add') {
    const half = p.cycle.amp / 2;
    const lim = 0.45 * span;
    if (half > lim) p.cycle.amp = 2 * lim;
    const h = p.cycle.amp / 2 + 2 * p.drift.sigma;
    p.levels = p.levels.map(v => clamp(v, lo + 0.05 * span + h, Math.max(lo + 0.05 * span + h, hi - 0.05 * span - h)));
  } else {
    p.levels = p.levels.map(v => clamp(v, lo, hi - 0.1 * span));
  }
  return p;
}

function makeUnit(inst: Installation, r: Rng): Unit {
  const e0 = r.uniform(-inst.tolPpm, inst.tolPpm);
  let k2 = 0,
    T0 = 25,
    k1 = 0;
  if (inst.osc === 'quartz') {
    k2 = -0.034 * (1 + 0.05 * r.normal());
    T0 = clamp(25 + 3 * r.normal(), 15, 35);
  } else if (inst.osc === 'mems') {
    k1 = r.sign() * r.logUniform(0.05, 1);
  } else {
    k1 = r.sign() * r.logUniform(2, 40);
  }
  const gRes = inst.gainResSigma * r.normal();
  const oRes = inst.offResSigma * inst.span * r.normal();
  let gA = gRes,
    oA = oRes,
    cG = 1,
    cO = 0;
  if (inst.digitalCal) {
    gA = inst.gainAnalogSigma * r.normal();
    oA = inst.offAnalogSigma * inst.span * r.normal();
    cG = (1 + gRes) / (1 + gA);
    cO = oRes - cG * oA;
  }
  const white = inst.noiseFrac * inst.span * r.lognormal(0.25);
  const flickRatio = inst.flickerRatio * r.lognormal(0.3);
  return {
    e0,
    k2,
    T0,
    k1,
    wanderSigma: inst.wanderSigma * r.lognormal(0.3),
    wanderTau: inst.wanderTau * r.lognormal(0.2),
    selfHeat: inst.selfHeat * r.lognormal(0.15),
    tCal: 23 + 2 * r.normal(),
    gA,
    oA,
    cG,
    cO,
    gTc: inst.gainTcSigma * r.normal(),
    oTc: inst.offTcSigma * r.normal(),
    cjc: inst.cjcSigma * r.normal(),
    inl: inst.inlMax * r.uniform(-1, 1),
    dnl: inst.dnlLsb * r.lognormal(0.3),
    dnlSeed: (r.next() * 4294967296) >>> 0,
    noiseWhite: white,
    flickerSigma: (white * flickRatio) / Math.sqrt(FLICKER_TAUS.length),
    pickAmp: inst.pickupFrac * inst.span * r.lognormal(0.7),
    pickPhase: r.uniform(0, TWO_PI),
    h3: r.uniform(0, 0.3),
    h3Phase: r.uniform(0, TWO_PI),
    lagTau: inst.lagTau * r.lognormal(0.1),
    // Interrupt latency differs by unit (its oscillator, its flash wait states, its load): ±20 %.
    jitter: inst.jitterScale * r.lognormal(0.2),
    d0: inst.d0 * r.lognormal(0.05), // firmware-determined: small unit scatter
    glitchRatePerHour: inst.glitchRatePerHour * r.lognormal(0.5),
  };
}

function initUnitState(u: Unit, r: Rng): UnitState {
  const fl = new Float64Array(FLICKER_TAUS.length);
  for (let j = 0; j < fl.length; j++) fl[j] = u.flickerSigma * r.normal();
  return { wander: u.wanderSigma * r.normal(), fl, lastT: NaN };
}

// ---------------------------------------------------------------------------
// Site physics helpers
// ---------------------------------------------------------------------------
function ambient(inst: Installation, t: number): number {
  let T = inst.ambient0;
  for (let i = 0; i < inst.ambAmps.length; i++)
    T += inst.ambAmps[i] * Math.sin((TWO_PI * t) / inst.ambPeriods[i] + inst.ambPhases[i]);
  return T;
}
/** Mains phase in cycles (grid frequency wanders as a sum of slow sinusoids; exact integral). */
function mainsCycles(inst: Installation, t: number): number {
  let c = inst.mainsHz * t + inst.mainsPhase0;
  for (let i = 0; i < inst.gridAmps.length; i++)
    c -=
      ((inst.gridAmps[i] * inst.gridPeriods[i]) / TWO_PI) *
      Math.cos((TWO_PI * t) / inst.gridPeriods[i] + inst.gridPhases[i]);
  return c;
}
function mainsFreq(inst: Installation, t: number): number {
  let f = inst.mainsHz;
  for (let i = 0; i < inst.gridAmps.length; i++)
    f += inst.gridAmps[i] * Math.sin((TWO_PI * t) / inst.gridPeriods[i] + inst.gridPhases[i]);
  return f;
}
/** Mean of sin(2*pi*h*c + theta) over an integration window whose phase runs from cStart to cEnd cycles. */
function windowSin(cStart: number, cEnd: number, h: number, theta: number, freq: number, window: number): number {
  const fe = cEnd - Math.floor(cEnd);
  if (window < 1e-5) return Math.sin(TWO_PI * h * fe + theta);
  const fs = cStart - Math.floor(cStart);
  return (Math.cos(TWO_PI * h * fs + theta) - Math.cos(TWO_PI * h * fe + theta)) / (TWO_PI * h * freq * window);
}
function oscPpm(u: Unit, T: number, osc: Installation['osc']): number {
  if (osc === 'quartz') return u.e0 + u.k2 * ((T - u.T0) ** 2 - (25 - u.T0) ** 2);
  return u.e0 + u.k1 * (T - 25);
}
function pulsCycles(p: NonNullable<ProcessSpec['pulsation']>, t: number): number {
  return (
    p.freq * t +
    p.phase -
    ((p.freq * p.wanderFrac * p.wanderPeriod) / TWO_PI) * Math.cos((TWO_PI * t) / p.wanderPeriod + p.wanderPhase)
  );
}

// ---------------------------------------------------------------------------
// Process: event timeline over the whole case + per-session fine grid
// ---------------------------------------------------------------------------
function upperBound(a: number[], x: number): number {
  let lo = 0,
    hi = a.length;
  while (lo < hi) {
    const m = (lo + hi) >>> 1;
    if (a[m] <= x) lo = m + 1;
    else hi = m;
  }
  return lo;
}

function makeEvents(p: ProcessSpec, r: Rng, tFrom: number, tTo: number): Events {
  const stateTimes: number[] = [-Infinity],
    stateVals: number[] = [];
  const mul = p.noise.multiplicative;
  const visit = (lvl: number): number =>
    mul ? lvl * (1 + p.levelJitter * r.normal()) : lvl + p.levelJitter * r.normal();
  let s = r.int(p.levels.length);
  stateVals.push(visit(p.levels[s]));
  if (p.levels.length > 1 && Number.isFinite(p.meanDwell)) {
    let t = tFrom - r.exp(p.meanDwell);
    while (t < tTo) {
      t += Math.max(0.1 * p.meanDwell, r.exp(p.meanDwell));
      let ns = r.int(p.levels.length - 1);
      if (ns >= s) ns++;
      s = ns;
      stateTimes.push(t);
      stateVals.push(visit(p.levels[s]));
    }
  }
  const cycStarts: number[] = [],
    cycPeriods: number[] = [],
    cycAmps: number[] = [];
  if (p.cycle) {
    const c = p.cycle;
    let t = tFrom - r.uniform(0, c.period);
    while (t < tTo + c.period) {
      const per = c.period * Math.max(0.3, 1 + c.jitter * r.normal());
      cycStarts.push(t);
      cycPeriods.push(per);
      cycAmps.push(c.amp * Math.max(0, 1 + c.ampJitter * r.normal()));
      t += per;
    }
  }
  const spikeTimes: number[] = [],
    spikeAmps: number[] = [],
    spikeDecays: number[] = [];
  let maxSpikeDur = 0;
  if (p.spikes) {
    const sp = p.spikes;
    let t = tFrom;
    for (;;) {
      t += r.exp(3600 / sp.ratePerHour);
      if (t > tTo) break;
      const dec = sp.decay * r.lognormal(0.4);
      spikeTimes.push(t);
      spikeAmps.push(sp.amp * r.lognormal(0.5) * (sp.signed ? r.sign() : 1));
      spikeDecays.push(dec);
      maxSpikeDur = Math.max(maxSpikeDur, 8 * dec);
    }
  }
  return { stateTimes, stateVals, cycStarts, cycPeriods, cycAmps, spikeTimes, spikeAmps, spikeDecays, maxSpikeDur };
}

function cycleShape(shape: CycleShape, u: number, duty: number): number {
  switch (shape) {
    case 'square':
      return u < duty ? 1 : 0;
    case 'saw':
      return u < duty ? u / duty : 1 - (u - duty) / (1 - duty);
    case 'sine':
      return 0.5 - 0.5 * Math.cos(TWO_PI * u);
    case 'batch': {
      // ramp, soak, exponential cool-down
      const ramp = 0.2;
      if (u < ramp) return u / ramp;
      if (u < duty) return 1;
      return Math.exp(-(u - duty) / 0.1);
    }
  }
}

function buildGrid(
  inst: Installation,
  ev: Events,
  carry: ProcCarry,
  from: number,
  to: number,
  lagMax: number,
  r: Rng,
): Grid {
  const p = inst.proc;
  const dt = inst.Ps / 4;
  const warm = Math.min(5 * Math.max(p.transTau, lagMax), 4000 * dt);
  const t0 = from - warm;
  const n = Math.ceil((to - t0) / dt) + 2;
  const x = new Float64Array(n);
  const aTr = 1 - Math.exp(-dt / Math.max(p.transTau, 1e-9));
  let si = Math.max(0, upperBound(ev.stateTimes, t0) - 1);
  let ci = ev.cycStarts.length ? Math.max(0, upperBound(ev.cycStarts, t0) - 1) : -1;
  let sp0 = 0;
  while (sp0 < ev.spikeTimes.length && ev.spikeTimes[sp0] < t0 - ev.maxSpikeDur) sp0++;
  // slow drift continues from the previous session (exact OU transition over the gap)
  let drift = Number.isFinite(carry.t)
    ? ouStep(carry.drift, Math.max(0, t0 - carry.t), p.drift.tau, p.drift.sigma, r)
    : p.drift.sigma * r.normal();
  const nTau = Math.max(p.noise.tau, 2 * dt);
  let nz = p.noise.sigma * r.normal();
  const aN = Math.exp(-dt / nTau),
    bN = p.noise.sigma * Math.sqrt(1 - aN * aN);
  const aD = Math.exp(-dt / p.drift.tau),
    bD = p.drift.sigma * Math.sqrt(1 - aD * aD);
  let smooth = NaN;
  const cyc = p.cycle;
  for (let i = 0; i < n; i++) {
    const t = t0 + i * dt;
    while (si + 1 < ev.stateTimes.length && ev.stateTimes[si + 1] <= t) si++;
    let target = ev.stateVals[si];
    if (cyc && ci >= 0) {
      while (ci + 1 < ev.cycStarts.length && ev.cycStarts[ci + 1] <= t) ci++;
      const u = clamp((t - ev.cycStarts[ci]) / ev.cycPeriods[ci], 0, 1);
      const sh = cycleShape(cyc.shape, u, cyc.duty);
      const amp = ev.cycAmps[ci];
      target = cyc.mode === 'add' ? target + amp * (sh - 0.5) : target * (1 - amp * (1 - sh));
    }
    smooth = Number.isNaN(smooth) ? target : smooth + aTr * (target - smooth);
    drift = drift * aD + bD * r.normal();
    nz = nz * aN + bN * r.normal();
    let v = p.noise.multiplicative ? smooth * (1 + nz) : smooth + nz;
    v += drift + p.trendPerHour * (t / 3600);
    if (ev.spikeTimes.length) {
      while (sp0 < ev.spikeTimes.length && ev.spikeTimes[sp0] < t - ev.maxSpikeDur) sp0++;
      for (let j = sp0; j < ev.spikeTimes.length && ev.spikeTimes[j] <= t; j++) {
        const age = t - ev.spikeTimes[j],
          dec = ev.spikeDecays[j];
        if (age > 8 * dec) continue;
        const osc = p.spikes && p.spikes.oscHz > 0 ? Math.cos(TWO_PI * p.spikes.oscHz * age) : 1;
        v += ev.spikeAmps[j] * Math.exp(-age / dec) * osc;
      }
    }
    if (p.floor !== null && v < p.floor) v = p.floor;
    x[i] = v;
  }
  carry.t = t0 + (n - 1) * dt;
  carry.drift = drift;
  return { t0, dt, x };
}

/** Per-unit first-order sensor lag (thermal mass, RMS averaging, damping orifice) applied on the grid. */
function lagGrid(g: Grid, tau: number): Grid {
  if (tau < g.dt / 50) return g;
  const a = 1 - Math.exp(-g.dt / tau);
  const y = new Float64Array(g.x.length);
  let s = g.x[0];
  for (let i = 0; i < y.length; i++) {
    s += a * (g.x[i] - s);
    y[i] = s;
  }
  return { t0: g.t0, dt: g.dt, x: y };
}

function interp(g: Grid, t: number): number {
  let f = (t - g.t0) / g.dt;
  const n = g.x.length;
  if (f <= 0) return g.x[0];
  if (f >= n - 1) return g.x[n - 1];
  const i = Math.floor(f);
  f -= i;
  return g.x[i] + f * (g.x[i + 1] - g.x[i]);
}

// ---------------------------------------------------------------------------
// Measurement chain of one physical unit during one session
// ---------------------------------------------------------------------------
interface RawStream {
  values: Float64Array;
  stamps: Float64Array /* ms */;
  emit: Float64Array /* true s */;
}

function represent(inst: Installation, y: number): number {
  if (inst.roundDecimals !== null) {
    const d = inst.roundDecimals;
    if (d >= 0) {
      const m = 10 ** d;
      return Math.round(y * m) / m;
    }
    const m = 10 ** -d;
    return Math.round(y / m) * m;
  }
  if (inst.float32) return Math.fround(y);
  return y;
}

function runUnit(
  inst: Installation,
  u: Unit,
  st: UnitState,
  grid: Grid,
  startS: number,
  n: number,
  dT: number,
  r: Rng,
): RawStream {
  const P = inst.Ps,
    span = inst.span;
  const values = new Float64Array(n),
    stamps = new Float64Array(n),
    emit = new Float64Array(n);
  const lagged = lagGrid(grid, u.lagTau);
  const syncOff = r.uniform(-1, 1) * inst.syncErr; // stamp clock re-synchronised at session start
  const puls = inst.proc.pulsation;
  const pulsAtt = puls ? 1 / Math.sqrt(1 + (TWO_PI * puls.freq * u.lagTau) ** 2) : 0;
  const pulsLag = puls ? Math.atan(TWO_PI * puls.freq * u.lagTau) / TWO_PI : 0;
  const glitchP = (u.glitchRatePerHour * P) / 3600;
  const dampA = inst.dampTau > 0 ? 1 - Math.exp(-P / inst.dampTau) : 1;
  const isTc = inst.kind === 'temperature-tc';
  let damp = NaN;
  let tPrev = startS - P; // previous sample instant (resched mode)
  let gIdeal = startS - P; // ideal tick grid (grid mode)
  let sPrev = -Infinity;
  const tpm = Math.round(1e-3 / inst.stampRes); // timestamp ticks per ms
  let k = 0;
  const latency = (): number => {
    // interrupt / handler latency: exponential with a rare long tail
    let l = r.exp(u.jitter);
    if (r.next() < 0.01) l *= r.uniform(3, 10);
    return Math.min(l, 0.5 * P);
  };
  while (k < n) {
    const Tdev = ambient(inst, tPrev) + dT + u.selfHeat;
    st.wander = ouStep(st.wander, P, u.wanderTau, u.wanderSigma, r);
    const eps = (oscPpm(u, Tdev, inst.osc) + st.wander) * 1e-6; // fractional frequency error
    const Ptrue = P / (1 + eps);
    let tS: number, stamp: number;
    if (inst.timing === 'grid') {
      gIdeal += Ptrue;
      tS = gIdeal;
      stamp = tS + latency();
    } else {
      tS = tPrev + Ptrue + u.d0 + latency();
      stamp = tS + 2e-6;
    }
    tPrev = tS;
    // timestamp in ms, quantised to integer ticks so 1 ms / 0.1 ms / 10 us / 1 us stamps are clean decimals
    let stampMs = Math.floor((stamp + syncOff) * 1000 * tpm) / tpm;
    if (stampMs <= sPrev) stampMs = (Math.round(sPrev * tpm) + 1) / tpm;

    // ---- value ----
    const win = inst.tIntNom / (1 + eps);
    let x = interp(lagged, tS - win / 2);
    if (puls) {
      const ce = pulsCycles(puls, tS) - pulsLag,
        cs = pulsCycles(puls, tS - win) - pulsLag;
      x += puls.amp * pulsAtt * windowSin(cs, ce, 1, 0, puls.freq, win);
    }
    if (u.pickAmp > 0) {
      const ce = mainsCycles(inst, tS),
        cs = mainsCycles(inst, tS - win),
        f = mainsFreq(inst, tS);
      x += u.pickAmp * (windowSin(cs, ce, 1, u.pickPhase, f, win) + u.h3 * windowSin(cs, ce, 3, u.h3Phase, f, win));
    }
    // unit noise: white + 1/f-like bank of OU processes
    let noise = u.noiseWhite * r.normal();
    const dtS = Number.isNaN(st.lastT) ? P : Math.max(0, tS - st.lastT);
    for (let j = 0; j < FLICKER_TAUS.length; j++) {
      st.fl[j] = ouStep(st.fl[j], dtS, FLICKER_TAUS[j], u.flickerSigma, r);
      noise += st.fl[j];
    }
    st.lastT = tS;
    if (glitchP > 0 && r.next() < glitchP) noise += inst.glitchAmp * span * r.lognormal(0.5) * r.sign();
    const dTc = Tdev - u.tCal;
    const g = u.gA + u.gTc * dTc;
    const o = u.oA + u.oTc * span * dTc + (isTc ? u.cjc * dTc : 0);
    let v = (1 + g) * (x + noise) + o;
    const xn = (v - inst.adcLo) / (inst.adcHi - inst.adcLo);
    v += u.inl * span * 4 * xn * (1 - xn);
    let c = (v - inst.adcLo) / inst.lsb;
    const cf = Math.floor(c);
    c += u.dnl * (fmix32((u.dnlSeed ^ (cf | 0)) >>> 0) / 4294967296 - 0.5) * 2;
    const code = clamp(Math.round(c), 0, inst.maxCode);
    let y = inst.adcLo + code * inst.lsb;
    if (inst.digitalCal) y = u.cG * y + u.cO;
    if (dampA < 1) {
      damp = Number.isNaN(damp) ? y : damp + dampA * (y - damp);
      y = damp;
    }
    if (inst.lowCutoff > 0 && y < inst.lowCutoff) y = 0;
    if (inst.clampNonNeg && y < 0) y = 0;
    y = represent(inst, y);

    if (inst.dropRate > 0 && r.next() < inst.dropRate) continue; // lost on the network
    values[k] = y;
    stamps[k] = stampMs;
    emit[k] = tS + inst.procDelay;
    sPrev = stampMs;
    k++;
  }
  return { values, stamps, emit };
}

// ---------------------------------------------------------------------------
// Network: true emit instants -> gateway-clock arrival times (FIFO, monotonic)
// ---------------------------------------------------------------------------
function arrivals(inst: Installation, emit: Float64Array, r: Rng): Float64Array {
  const net = inst.net,
    n = emit.length;
  const out = new Float64Array(n);
  if (n === 0) return out;
  const cong: number[] = [];
  if (net.congRatePerHour > 0) {
    let t = emit[0] - net.congDur * 2;
    for (;;) {
      t += r.exp(3600 / net.congRatePerHour);
      if (t > emit[n - 1]) break;
      cong.push(t, net.congDur * r.lognormal(0.5), net.congExtra * r.lognormal(0.5));
    }
  }
  let cj = 0;
  const pollPhase = r.uniform(0, Math.max(net.pollQ, 1e-9));
  const gw = (t: number): number => t + net.gwOffset + net.gwPpm * 1e-6 * t;
  let prev = -Infinity;
  for (let k = 0; k < n; k += net.batch) {
    const last = Math.min(n - 1, k + net.batch - 1);
    let t = emit[last];
    if (net.pollQ > 0) t = Math.ceil((t - pollPhase) / net.pollQ) * net.pollQ + pollPhase;
    let lat =
      net.base + (net.jitterLogSigma > 0 ? net.jitter * Math.exp(net.jitterLogSigma * r.normal()) : r.exp(net.jitter));
    while (cj < cong.length && cong[cj] + cong[cj + 1] < t) cj += 3;
    for (let q = cj; q < cong.length && cong[q] <= t; q += 3) {
      const ph = (t - cong[q]) / cong[q + 1];
      if (ph >= 0 && ph <= 1) lat += cong[q + 2] * (1 - Math.abs(2 * ph - 1)) * r.uniform(0.7, 1);
    }
    let a = gw(t + lat);
    for (let j = k; j <= last; j++) {
      const spacing = j === k ? net.serial : net.serial / 8;
      if (a <= prev + spacing) a = prev + spacing;
      out[j] = a * 1000;
      prev = a;
      a += 1e-6;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Software simulator imitating the sensor
// ---------------------------------------------------------------------------
function runSimulator(
  inst: Installation,
  enrol: Float64Array,
  hasCycle: number,
  startS: number,
  n: number,
  r: Rng,
): RawStream {
  const P = inst.Ps;
  // statistics the imitator learned from recorded genuine data
  const m = enrol.length;
  let mean = 0;
  for (let i = 0; i < m; i++) mean += enrol[i];
  mean /= Math.max(1, m);
  let v2 = 0;
  for (let i = 0; i < m; i++) v2 += (enrol[i] - mean) ** 2;
  const std = Math.sqrt(v2 / Math.max(1, m - 1));
  let d2 = 0;
  for (let i = 1; i < m; i++) d2 += (enrol[i] - enrol[i - 1]) ** 2;
  const wStd = Math.min(std, Math.sqrt(d2 / Math.max(1, m - 1) / 2));
  const sStd = Math.sqrt(Math.max(0, std * std - wStd * wStd));
  const sorted = Float64Array.from(enrol).sort();
  const q = (p: number): number => sorted[Math.min(m - 1, Math.max(0, Math.round(p * (m - 1))))];
  let minStep = Infinity;
  for (let i = 1; i < m; i++) {
    const d = sorted[i] - sorted[i - 1];
    if (d > 1e-12 * inst.span && d < minStep) minStep = d;
  }

  const model = r.weighted(['ou', 'sine', 'levels', 'naive', 'walk'], [30, 20, 20, 15, 15]);
  const tauSamples = r.logUniform(5, 200);
  const sinePeriod = hasCycle > 0 ? hasCycle * r.uniform(0.7, 1.3) : P * r.logUniform(50, 500);
  const sinePhase = r.uniform(0, TWO_PI);
  const lvls = [q(0.1), q(0.5), q(0.9)];
  const dwell = r.logUniform(20, 300);
  const spikeP = r.bool(0.2) ? r.logUniform(1e-4, 3e-3) : 0;
  // displayed resolution
  type Rounding = { kind: 'none' } | { kind: 'decimals'; d: number } | { kind: 'step'; s: number } | { kind: 'f32' };
  let rounding: Rounding;
  if (inst.roundDecimals !== null) rounding = { kind: 'decimals', d: inst.roundDecimals };
  else if (inst.float32 && r.bool(0.5)) rounding = { kind: 'f32' };
  else {
    const c = r.weighted(['step', 'dec', 'none'], [50, 30, 20]);
    if (c === 'step' && Number.isFinite(minStep)) rounding = { kind: 'step', s: minStep };
    else if (c === 'dec' || (c === 'step' && !Number.isFinite(minStep)))
      rounding = { kind: 'decimals', d: Math.max(-3, Math.ceil(-Math.log10(Math.max(wStd, 1e-9 * inst.span))) + 1) };
    else rounding = { kind: 'none' };
  }
  const round = (y: number): number => {
    switch (rounding.kind) {
      case 'none':
        return y;
      case 'f32':
        return Math.fround(y);
      case 'step':
        return Math.round(y / rounding.s) * rounding.s;
      case 'decimals': {
        const d = rounding.d;
        if (d >= 0) {
          const mm = 10 ** d;
          return Math.round(y * mm) / mm;
        }
        const mm = 10 ** -d;
        return Math.round(y / mm) * mm;
      }
    }
  };
  // software timer
  const timer = r.weighted(['setInterval', 'sleepLoop', 'deadline'], [40, 30, 30]);
  const late = r.logUniform(5e-5, 1.5e-3);
  const overhead = r.logUniform(2e-5, 5e-4);
  const hiccupP = r.logUniform(1e-4, 5e-3);
  const stampRes =
    timer === 'setInterval' ? (r.bool(0.7) ? 1e-3 : 1e-6) : timer === 'sleepLoop' ? 1e-6 : r.bool(0.5) ? 1e-3 : 1e-6;
  const hostOffset = r.uniform(-0.02, 0.02);
  const sendDelay = r.logUniform(2e-5, 1e-3);
  const tpm = Math.round(1e-3 / stampRes);
  const Pint = timer === 'setInterval' ? Math.max(1e-3, Math.round(P * 1000) / 1000) : P;

  const values = new Float64Array(n),
    stamps = new Float64Array(n),
    emit = new Float64Array(n);
  let t = startS,
    grid = startS;
  let ou = sStd * r.normal(),
    walk = mean,
    lvl = 1,
    lvlS = lvls[1];
  let sPrev = -Infinity;
  for (let k = 0; k < n; k++) {
    let wake = r.exp(late);
    if (r.next() < hiccupP) wake += r.uniform(0.005, 0.06);
    if (k > 0) {
      if (timer === 'setInterval') t = t + Pint + wake;
      else if (timer === 'sleepLoop') t = t + P + overhead + wake;
      else {
        grid += P;
        t = Math.max(grid + wake, t + 1e-6);
      }
    } else t = startS + wake;
    let y: number;
    switch (model) {
      case 'ou':
        ou = ouStep(ou, 1, tauSamples, sStd, r);
        y = mean + ou + wStd * r.normal();
        break;
      case 'sine':
        y = mean + Math.SQRT2 * sStd * Math.sin((TWO_PI * (t - startS)) / sinePeriod + sinePhase) + wStd * r.normal();
        break;
      case 'levels': {
        if (r.next() < 1 / dwell) lvl = r.int(3);
        lvlS += (lvls[lvl] - lvlS) * 0.3;
        y = lvlS + wStd * r.normal();
        break;
      }
      case 'naive':
        y = mean + std * r.normal();
        break;
      default: {
        // bounded random walk
        walk += Math.max(wStd, 1e-9 * inst.span) * r.normal();
        if (walk < q(0.02)) walk = 2 * q(0.02) - walk;
        if (walk > q(0.98)) walk = 2 * q(0.98) - walk;
        y = walk;
        break;
      }
    }
    if (spikeP > 0 && r.next() < spikeP) y += std * r.uniform(3, 8) * r.sign();
    y = round(clamp(y, inst.lo - 0.02 * inst.span, inst.hi + 0.02 * inst.span));
    let s = Math.floor((t + hostOffset) * 1000 * tpm) / tpm; // ms
    if (s <= sPrev) s = (Math.round(sPrev * tpm) + 1) / tpm;
    values[k] = y;
    stamps[k] = s;
    emit[k] = t + sendDelay;
    sPrev = s;
  }
  return { values, stamps, emit };
}

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------
function finishStream(inst: Installation, raw: RawStream, r: Rng): Stream {
  return { values: raw.values, sourceTimes: raw.stamps, arrivalTimes: arrivals(inst, raw.emit, r) };
}

function generateCase(
  seed: number,
  idx: number,
  kind: Kind,
  enrolN: number,
  testN: number,
  laterHours: number,
  warmerK: number,
): Case {
  const inst = makeInstallation(kind, new Rng(seed, idx, 1));
  const unitA = makeUnit(inst, new Rng(seed, idx, 2));
  const unitB = makeUnit(inst, new Rng(seed, idx, 3));
  const rs = new Rng(seed, idx, 4);
  const P = inst.Ps;
  const enrolStart = 1 + rs.uniform(0, P);
  const laterStart = enrolStart + enrolN * P + laterHours * 3600;
  const span = (n: number): number => (n * 1.1 + 20) * P + 1;
  const lagMax = Math.max(unitA.lagTau, unitB.lagTau);
  const ev = makeEvents(
    inst.proc,
    new Rng(seed, idx, 5),
    enrolStart - 5 * Math.max(inst.proc.transTau, lagMax) - 4 * P - 10,
    laterStart + span(testN) + 10,
  );
  const carry: ProcCarry = { t: NaN, drift: 0 };

  const gridE = buildGrid(
    inst,
    ev,
    carry,
    enrolStart - 2 * P,
    enrolStart + span(enrolN),
    lagMax,
    new Rng(seed, idx, 6),
  );
  const stA = initUnitState(unitA, new Rng(seed, idx, 7));
  const enrolRaw = runUnit(inst, unitA, stA, gridE, enrolStart, enrolN, 0, new Rng(seed, idx, 8));
  const enrol = finishStream(inst, enrolRaw, new Rng(seed, idx, 9));

  const gridL = buildGrid(
    inst,
    ev,
    carry,
    laterStart - 2 * P,
    laterStart + span(testN),
    lagMax,
    new Rng(seed, idx, 10),
  );
  const genuine = finishStream(
    inst,
    runUnit(inst, unitA, stA, gridL, laterStart + rs.uniform(0, P), testN, warmerK, new Rng(seed, idx, 11)),
    new Rng(seed, idx, 12),
  );
  const stB = initUnitState(unitB, new Rng(seed, idx, 13));
  const sameModel = finishStream(
    inst,
    runUnit(inst, unitB, stB, gridL, laterStart + rs.uniform(0, P), testN, warmerK, new Rng(seed, idx, 14)),
    new Rng(seed, idx, 15),
  );
  const cyclePeriod = inst.proc.cycle ? inst.proc.cycle.period : 0;
  const simulator = finishStream(
    inst,
    runSimulator(inst, enrol.values, cyclePeriod, laterStart + rs.uniform(0, P), testN, new Rng(seed, idx, 16)),
    new Rng(seed, idx, 17),
  );

  return {
    id: `b-${String(idx).padStart(4, '0')}-${kind}`,
    kind,
    rateHz: inst.rateHz,
    bits: inst.bits,
    enrol,
    genuine,
    sameModel,
    simulator,
  };
}

export function generateCases(options: GenerateOptions): Case[] {
  const { seed, cases, enrolSamples, testSamples } = options;
  const laterHours = options.laterHours ?? 1;
  const warmerK = options.warmerK ?? 7;
  if (!Number.isFinite(seed)) throw new Error('seed must be a finite number');
  for (const [k, v] of [
    ['cases', cases],
    ['enrolSamples', enrolSamples],
    ['testSamples', testSamples],
  ] as const) {
    if (!Number.isInteger(v) || v < 0) throw new Error(`${k} must be a non-negative integer`);
  }
  if (!(laterHours >= 0) || !Number.isFinite(warmerK)) throw new Error('laterHours must be >= 0 and warmerK finite');
  const kindOffset = new Rng(seed, 0x5eed).int(KINDS.length);
  const out: Case[] = [];
  for (let i = 0; i < cases; i++)
    out.push(
      generateCase(seed, i, KINDS[(i + kindOffset) % KINDS.length], enrolSamples, testSamples, laterHours, warmerK),
    );
  return out;
}
