/**
 * The training simulator ("A"): industrial sensors whose identity lives in their physics,
 * randomised far wider than any one plant, so that the model learns what a unit leaves in its
 * data rather than one sensor's numbers. The model card documents the same ranges. A second
 * generator, written separately (./generator-b), is used only to evaluate.
 *
 * An installation fixes what a unit and anything put in its place share: the sampling rate
 * (0.1-1000 Hz), the converter (10-24 bits over its range), the firmware (raw calibrated values,
 * decimal rounding or float32), the mains (50/60 Hz) and the process (flat, drifting, stepping
 * between machine states, cycling). A unit draws its own oscillator (quartz or MEMS within
 * ±20-100 ppm, RC within ±0.5-2 %), its stamping clock (disciplined, so its stamps show the
 * crystal; or its own, so they show the nominal period), jitter (1 µs to 20 ms, white on a grid
 * or accumulating in a re-armed timer), stamp resolution, lost readings, ADC noise (white, and
 * 1/f below the front end's corner unless it is chopper-stabilised), calibration gain and offset
 * with their tempcos, mains pickup (attenuated by the ADC's integration time) and transport to
 * the gateway (latency, polling, readings batched into one message). Impostors: another unit of
 * the installation, a software simulator, a replay.
 *
 * Times are milliseconds on the simulated clock; `sourceTimes` are the unit's own stamps,
 * `arrivalTimes` when the gateway received them.
 */
import { SeededRandom } from './random';
import type { TimeSource } from '../../lib/tinyml/catalog';

export type ProcessKind = 'flat' | 'drifting' | 'stepping' | 'cycling';

/** What the sensor measures, in its range's units; shared by a genuine unit and anything in its place. */
export interface ProcessParams {
  kind: ProcessKind;
  level: number;
  /** Size of the drift, the steps or the cycle. */
  swing: number;
  /** Drift period, mean dwell between steps, or cycle period. */
  timescaleMs: number;
  wanderStd: number;
  wanderTauMs: number;
}

/** Where a unit is mounted and what firmware it runs: an impostor of the same model shares it. */
export interface Installation {
  periodMs: number;
  adcBits: number;
  rangeLow: number;
  rangeHigh: number;
  mainsHz: 50 | 60;
  /** Firmware rounding of reported values (e.g. 0.01), 'float32', or null for calibrated values as is. */
  firmware: number | 'float32' | null;
  /** Time the ADC integrates over (ms), 0 for an instantaneous sample-and-hold. */
  integrationMs: number;
  process: ProcessParams;
  /** The sensor model's design, which every unit of it shares up to manufacturing spread. */
  design: SensorDesign;
}

/** What a datasheet fixes for every unit of a model (and a site for every unit on it). */
export interface SensorDesign {
  oscillator: Oscillator;
  /** Crystal tolerance of the model (ppm): units spread within it. */
  clockTolerancePpm: number;
  disciplinedStamps: boolean;
  accumulatingJitter: boolean;
  jitterUs: number;
  stampResolutionMs: number;
  noiseLsb: number;
  /** 1/f corner of the front end (Hz): where its flicker noise meets the white; 0 when chopper-stabilised. */
  flickerCornerHz: number;
  gainTempcoPpmPerK: number;
  /** Mains pickup of the site's wiring, in LSB. */
  mainsAmpLsb: number;
  lossRate: number;
  latencyMs: number;
  latencyJitterMs: number;
  /** The gateway takes readings in batches every so many ms (a polling loop), 0 when pushed. */
  batchMs: number;
  /**
   * Readings sent together in one message (a Modbus block read, an array payload), 1 when each
   * goes alone; a batch leaves with its last reading and is split on arrival `splitUs` apart.
   */
  batchReadings: number;
  splitUs: number;
}

export type Oscillator = 'quartz' | 'mems' | 'rc';

/** One physical unit's parameters. */
export interface UnitParams {
  clockPpm: number;
  oscillator: Oscillator;
  /** Quartz: ppm/K² from its turnover; MEMS and RC: ppm/K. */
  clockTempco: number;
  turnoverC: number;
  /** Stamps from a disciplined clock (true time) or from the unit's own oscillator. */
  disciplinedStamps: boolean;
  jitterUs: number;
  /** The timer is re-armed from the last tick, so jitter accumulates. */
  accumulatingJitter: boolean;
  stampResolutionMs: number;
  lossRate: number;
  noiseLsb: number;
  flickerCornerHz: number;
  gain: number;
  offset: number;
  gainTempcoPpmPerK: number;
  mainsAmpLsb: number;
  /** How much warmer than the hall this unit runs. */
  thermalOffsetK: number;
  latencyMs: number;
  latencyJitterMs: number;
}

export interface Recording {
  values: Float64Array;
  sourceTimes: Float64Array;
  arrivalTimes: Float64Array;
}

export type { TimeSource };

export function timesOf(recording: Recording, timeSource: TimeSource): Float64Array {
  return timeSource === 'source' ? recording.sourceTimes : recording.arrivalTimes;
}

const DAY_MS = 86_400_000;
/**
 * Unit-to-unit spread from data sheets rather than from what a model finds easy. An MCU's RC
 * oscillator is factory-trimmed to ±1 % at 25 °C (STM32 HSI), ±10 % untrimmed and ±1 % after
 * user calibration (ATmega328P): tolerances of 0.5-2 %, not the 0.05-0.2 % of before. ADC noise:
 * data sheets tabulate typical values; where they give a maximum it is 1.5-2× the typical, a
 * lognormal σ of about 0.25 between units (was 0.15).
 */
const RC_TOLERANCES_PPM = [5_000, 10_000, 20_000] as const;
/**
 * Rates a sensor is set to: half the installations use one of these, the rest any rate in
 * 0.1-1000 Hz. At a nominal rate a unit stamping with its own clock shows intervals all alike.
 */
const NOMINAL_RATES_HZ = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000] as const;
const NOISE_SPREAD = 0.25;
/**
 * Flicker noise: amplifiers and references that are not chopper-stabilised show 1/f noise below
 * a corner that data sheets of instrumentation amplifiers, bridge front ends and delta-sigma ADCs
 * put at 0.05-10 Hz; chopper-stabilised and auto-zero parts show none (40 % of designs here).
 * 1/f noise varies between units of one part more than white noise does: σ 40 % on the corner.
 */
const FLICKER_SPREAD = 0.4;
const MICROSECOND = 1e-3;

function roundTo(value: number, step: number): number {
  return Math.round(value / step) * step;
}

function logUniform(rng: SeededRandom, low: number, high: number): number {
  return Math.exp(rng.uniform(Math.log(low), Math.log(high)));
}

function pick<T>(rng: SeededRandom, items: readonly T[]): T {
  return items[rng.int(items.length)];
}

export interface InstallationOptions {
  /** Pin the sampling rate (Hz) instead of drawing it. */
  rateHz?: number;
}

export function drawInstallation(rng: SeededRandom, options: InstallationOptions = {}): Installation {
  const periodMs =
    1000 / (options.rateHz ?? (rng.next() < 0.5 ? pick(rng, NOMINAL_RATES_HZ) : logUniform(rng, 0.1, 1000)));
  const adcBits = 10 + rng.int(15);
  const span = logUniform(rng, 1, 10_000);
  const rangeLow = rng.next() < 0.5 ? 0 : -span / 2;
  const lsb = span / 2 ** adcBits;
  const firmwareDraw = rng.next();
  const firmware =
    firmwareDraw < 0.4
      ? 10 ** Math.round(Math.log10(lsb * logUniform(rng, 0.3, 30)))
      : firmwareDraw < 0.5
        ? ('float32' as const)
        : null;
  const integrationDraw = rng.next();
  const integrationMs =
    integrationDraw < 0.5 ? 0 : integrationDraw < 0.7 ? 20 : integrationDraw < 0.8 ? 1000 / 60 : periodMs / 2;
  const kind = pick(rng, ['flat', 'drifting', 'stepping', 'cycling'] as const);
  const oscillator = pick(rng, ['quartz', 'quartz', 'quartz', 'mems', 'mems', 'rc'] as const);
  const jitterCeilingUs = Math.min(20_000, (periodMs * 1000) / 8);
  return {
    periodMs,
    adcBits,
    rangeLow,
    rangeHigh: rangeLow + span,
    mainsHz: rng.next() < 0.7 ? 50 : 60,
    firmware,
    integrationMs,
    process: {
      kind,
      level: rangeLow + span * rng.uniform(0.2, 0.8),
      swing: span * logUniform(rng, 0.001, 0.2),
      timescaleMs: logUniform(rng, 5_000, 3_600_000),
      wanderStd: span * logUniform(rng, 1e-5, 0.01),
      wanderTauMs: logUniform(rng, 1_000, 600_000),
    },
    design: {
      oscillator,
      clockTolerancePpm: oscillator === 'rc' ? pick(rng, RC_TOLERANCES_PPM) : pick(rng, [20, 50, 100]),
      disciplinedStamps: rng.next() < 0.6,
      accumulatingJitter: rng.next() < 0.3,
      jitterUs: logUniform(rng, 1, Math.max(1.5, jitterCeilingUs)),
      stampResolutionMs: pick(rng, [MICROSECOND, MICROSECOND, 0.01, 0.1, 1, 1]),
      noiseLsb: logUniform(rng, 0.3, adcBits > 18 ? 300 : 5),
      flickerCornerHz: rng.next() < 0.4 ? 0 : logUniform(rng, 0.05, 10),
      gainTempcoPpmPerK: rng.uniform(5, 50),
      mainsAmpLsb: rng.next() < 0.2 ? 0 : rng.logNormal(1, 1),
      lossRate: rng.next() < 0.3 ? 0 : logUniform(rng, 1e-4, 0.02),
      latencyMs: logUniform(rng, 0.5, 50),
      latencyJitterMs: logUniform(rng, 0.05, 20),
      batchMs: rng.next() < 0.3 ? logUniform(rng, 1, 1000) : 0,
      batchReadings: rng.next() < 0.15 ? 2 + rng.int(31) : 1,
      splitUs: logUniform(rng, 2, 200),
    },
  };
}

/**
 * One unit of the installation's model: its own crystal within the model's tolerance, and the
 * manufacturing spread of everything else (noise σ 25 %, jitter ±20 %, gain ±0.15 %, ...).
 */
export function drawUnit(rng: SeededRandom, installation: Installation): UnitParams {
  const { design } = installation;
  const spread = (sigma: number) => rng.logNormal(1, sigma);
  return {
    clockPpm: Math.max(-1, Math.min(1, rng.gaussian() / 3)) * design.clockTolerancePpm,
    oscillator: design.oscillator,
    clockTempco:
      design.oscillator === 'quartz'
        ? -0.034 * spread(0.15)
        : (rng.next() < 0.5 ? -1 : 1) *
          (design.oscillator === 'mems' ? logUniform(rng, 0.2, 3) : logUniform(rng, 5, 50)),
    turnoverC: rng.uniform(20, 30),
    disciplinedStamps: design.disciplinedStamps,
    jitterUs: design.jitterUs * spread(0.2),
    accumulatingJitter: design.accumulatingJitter,
    stampResolutionMs: design.stampResolutionMs,
    lossRate: design.lossRate,
    noiseLsb: design.noiseLsb * spread(NOISE_SPREAD),
    flickerCornerHz: design.flickerCornerHz * spread(FLICKER_SPREAD),
    gain: 1 + 0.0015 * rng.gaussian(),
    offset: (installation.rangeHigh - installation.rangeLow) * 0.0005 * rng.gaussian(),
    gainTempcoPpmPerK: design.gainTempcoPpmPerK * spread(0.2),
    mainsAmpLsb: design.mainsAmpLsb * spread(0.3),
    thermalOffsetK: rng.uniform(0, 10),
    latencyMs: design.latencyMs,
    latencyJitterMs: design.latencyJitterMs,
  };
}

/** The measured process, stepped per sample: a shape by its kind plus an Ornstein-Uhlenbeck wander. */
class ProcessSignal {
  private wander: number;
  private state = 0;
  private nextStepMs = -Infinity;
  private settled: number;

  constructor(
    private readonly params: ProcessParams,
    private readonly rng: SeededRandom,
  ) {
    this.wander = params.wanderStd * rng.gaussian();
    this.settled = params.level;
  }

  at(timeMs: number, stepMs: number): number {
    const { kind, level, swing, timescaleMs, wanderStd, wanderTauMs } = this.params;
    const decay = Math.exp(-stepMs / wanderTauMs);
    this.wander = this.wander * decay + wanderStd * Math.sqrt(1 - decay * decay) * this.rng.gaussian();
    switch (kind) {
      case 'flat':
        return level + this.wander;
      case 'drifting':
        return level + swing * Math.sin((2 * Math.PI * timeMs) / timescaleMs) + this.wander;
      case 'cycling': {
        const phase = (timeMs / timescaleMs) % 1;
        return level + swing * (phase < 0.5 ? 4 * phase - 1 : 3 - 4 * phase) + this.wander;
      }
      case 'stepping': {
        if (timeMs >= this.nextStepMs) {
          // A machine changes state: the reading moves to a new level, through a short lag.
          this.state = this.rng.int(4);
          this.nextStepMs = timeMs + this.rng.exponential(timescaleMs);
        }
        const target = level + swing * (this.state - 1.5);
        this.settled += (target - this.settled) * (1 - Math.exp(-stepMs / 2000));
        return this.settled + this.wander;
      }
    }
  }
}

interface Source {
  record(startMs: number, count: number): Recording;
}

const float32 = new Float32Array(1);

/** A genuine unit, or another unit of its model put in its place. */
export class SimulatedSensor implements Source {
  private readonly rng: SeededRandom;

  constructor(
    readonly installation: Installation,
    readonly unit: UnitParams,
    seed: number,
  ) {
    this.rng = new SeededRandom(seed);
  }

  /** The hall's temperature in this recording, beyond its daily swing: weather, a door, a furnace. */
  private ambientK = 0;
  /** The front end's 1/f noise, in units of its white noise: it carries on from one recording to the next. */
  private flicker: FlickerNoise | undefined;

  private temperature(timeMs: number): number {
    return 25 + this.ambientK + this.unit.thermalOffsetK + 3 * Math.sin((2 * Math.PI * timeMs) / DAY_MS);
  }

  private clockPpm(temperature: number): number {
    const { unit } = this;
    const dT = temperature - unit.turnoverC;
    return unit.clockPpm + (unit.oscillator === 'quartz' ? unit.clockTempco * dT * dT : unit.clockTempco * dT);
  }

  record(startMs: number, count: number): Recording {
    const { unit, installation, rng } = this;
    this.ambientK = 4 * rng.gaussian();
    const span = installation.rangeHigh - installation.rangeLow;
    const lsb = span / 2 ** installation.adcBits;
    const maxCode = 2 ** installation.adcBits - 1;
    const process = new ProcessSignal(installation.process, rng);
    this.flicker ??= new FlickerNoise(unit.flickerCornerHz, installation.periodMs, rng);
    const flicker = this.flicker;
    // The grid is never exactly at its nominal frequency, so the hum's phase against the samples
    // is new in every recording: its amplitude carries identity, its phase does not.
    const mainsHz = installation.mainsHz + 0.02 * rng.gaussian();
    const mainsPhase = rng.uniform(0, 2 * Math.PI);
    // An ADC integrating over T passes mains of frequency f at |sinc(f T)|.
    const x = (mainsHz * installation.integrationMs) / 1000;
    const pickup = x === 0 ? 1 : Math.abs(Math.sin(Math.PI * x) / (Math.PI * x));
    const recording: Recording = {
      values: new Float64Array(count),
      sourceTimes: new Float64Array(count),
      arrivalTimes: new Float64Array(count),
    };
    const period = installation.periodMs;
    let tick = startMs;
    let ownClock = startMs;
    let arrivedAt = -Infinity;
    const { batchReadings, splitUs } = installation.design;
    const unsent: number[] = [];
    let i = 0;
    while (i < count) {
      const temperature = this.temperature(tick);
      const ppm = this.clockPpm(temperature);
      const jitter = unit.jitterUs * MICROSECOND * rng.gaussian();
      const sampledAt = unit.accumulatingJitter ? tick : tick + jitter;
      const ownStamp = unit.accumulatingJitter ? ownClock : ownClock + jitter;
      // True time of the next tick; the unit's own clock counts nominal periods.
      tick += period * (1 + ppm * 1e-6) + (unit.accumulatingJitter ? jitter : 0);
      ownClock += period + (unit.accumulatingJitter ? jitter : 0);
      if (rng.next() < unit.lossRate) continue;

      const analog =
        process.at(sampledAt, period) +
        unit.noiseLsb * lsb * (rng.gaussian() + flicker.at(sampledAt)) +
        pickup * unit.mainsAmpLsb * lsb * Math.sin((2 * Math.PI * mainsHz * sampledAt) / 1000 + mainsPhase);
      const code = Math.min(maxCode, Math.max(0, Math.round((analog - installation.rangeLow) / lsb)));
      // The firmware compensates with its own temperature reading, in 0.1 K steps.
      const measuredDT = Math.round((temperature - 25) * 10) / 10;
      const gain = unit.gain * (1 + unit.gainTempcoPpmPerK * 1e-6 * measuredDT);
      let value = installation.rangeLow + code * lsb * gain + unit.offset + 2e-5 * span * measuredDT;
      if (installation.firmware === 'float32') {
        float32[0] = value;
        value = float32[0];
      } else if (installation.firmware !== null) value = roundTo(value, installation.firmware);

      const stamp = unit.disciplinedStamps ? sampledAt : ownStamp;
      recording.values[i] = value;
      recording.sourceTimes[i] = Math.floor(stamp / unit.stampResolutionMs) * unit.stampResolutionMs;
      // Delivery keeps order: a reading never arrives before the one sent ahead of it. A polling
      // gateway picks readings up at its next poll.
      let delivered = sampledAt + unit.latencyMs + rng.exponential(unit.latencyJitterMs);
      if (installation.design.batchMs > 0)
        delivered =
          Math.ceil(delivered / installation.design.batchMs) * installation.design.batchMs + 0.05 * rng.next();
      unsent.push(i);
      if (unsent.length === batchReadings || i === count - 1) {
        for (const k of unsent) {
          const gap = batchReadings > 1 ? splitUs * rng.uniform(0.5, 1.5) : rng.uniform(0.1, 1);
          arrivedAt = Math.max(arrivedAt + MICROSECOND * gap, delivered);
          recording.arrivalTimes[k] = arrivedAt;
        }
        unsent.length = 0;
      }
      i++;
    }
    return recording;
  }
}

/**
 * 1/f noise as a sum of Ornstein-Uhlenbeck processes with time constants half a decade apart
 * (d = ln √10), from the sampling period to an hour: each adds v / (d · f) to the one-sided
 * spectrum between its corners, so they sum to 1/f. White noise of σ = 1 spreads over 0 to half
 * the rate, a density of 2 / rate; meeting it at the corner f_c takes v = d · 2 f_c / rate. The
 * corner is held to half the rate, where all the band is flicker already.
 */
class FlickerNoise {
  private readonly tausMs: number[] = [];
  private readonly state: number[] = [];
  private readonly sigma: number;
  private lastMs = Number.NaN;

  constructor(
    cornerHz: number,
    periodMs: number,
    private readonly rng: SeededRandom,
  ) {
    const rateHz = 1000 / periodMs;
    const d = Math.log(10) / 2;
    this.sigma = Math.sqrt((d * 2 * Math.min(cornerHz, rateHz / 2)) / rateHz);
    if (this.sigma === 0) return;
    for (let tau = periodMs / Math.PI; tau < 3_600_000; tau *= Math.sqrt(10)) {
      this.tausMs.push(tau);
      this.state.push(0); // drawn afresh at the first reading, when nothing came before
    }
  }

  at(timeMs: number): number {
    const elapsed = timeMs - this.lastMs;
    this.lastMs = timeMs;
    let sum = 0;
    for (let k = 0; k < this.tausMs.length; k++) {
      const decay = Number.isFinite(elapsed) ? Math.exp(-Math.abs(elapsed) / this.tausMs[k]) : 0;
      this.state[k] = this.state[k] * decay + this.sigma * Math.sqrt(1 - decay * decay) * this.rng.gaussian();
      sum += this.state[k];
    }
    return sum;
  }
}

/**
 * A software simulator posing as the sensor: values around the real process with plausible
 * noise, sent from a timer loop and stamped with a millisecond wall clock, as a script would.
 */
export class SoftwareImpostor implements Source {
  private readonly rng: SeededRandom;
  private readonly timerJitterMs: number;
  private readonly noise: number;
  private readonly decimals: number | null;

  constructor(
    readonly installation: Installation,
    seed: number,
  ) {
    this.rng = new SeededRandom(seed);
    const lsb = (installation.rangeHigh - installation.rangeLow) / 2 ** installation.adcBits;
    this.timerJitterMs = this.rng.logNormal(0.3, 1);
    this.noise = this.rng.logNormal(1.5, 0.6) * lsb;
    this.decimals = this.rng.next() < 0.5 ? Math.max(0, Math.round(-Math.log10(lsb))) : null;
  }

  record(startMs: number, count: number): Recording {
    const { rng, installation } = this;
    const process = new ProcessSignal(installation.process, rng);
    const recording: Recording = {
      values: new Float64Array(count),
      sourceTimes: new Float64Array(count),
      arrivalTimes: new Float64Array(count),
    };
    for (let i = 0; i < count; i++) {
      const spike = rng.next() < 0.01 ? rng.uniform(2, 10) : 0;
      const firedAt = startMs + i * installation.periodMs + Math.abs(this.timerJitterMs * rng.gaussian()) + spike;
      const value = process.at(firedAt, installation.periodMs) + this.noise * rng.gaussian();
      recording.values[i] = this.decimals === null ? value : roundTo(value, 10 ** -this.decimals);
      recording.sourceTimes[i] = Math.floor(firedAt);
      recording.arrivalTimes[i] = roundTo(firedAt + 1 + rng.exponential(0.3), MICROSECOND);
    }
    return recording;
  }
}

/**
 * Genuine samples `from`..`from+count` played back `shiftMs` later: source timestamps shifted to
 * look fresh, arrival times those of the new transmission.
 */
export function replay(
  recording: Recording,
  from: number,
  count: number,
  shiftMs: number,
  rng: SeededRandom,
): Recording {
  const values = recording.values.slice(from, from + count);
  const sourceTimes = recording.sourceTimes.slice(from, from + count).map(t => t + shiftMs);
  const arrivalTimes = sourceTimes.map(t => roundTo(t + 1 + rng.exponential(0.3), MICROSECOND));
  return { values, sourceTimes, arrivalTimes };
}
