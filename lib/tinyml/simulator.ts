/**
 * A simulator of industrial sensors whose identity lives in their physics, used to train and
 * evaluate the device-behaviour model (the model card in models/ documents the same figures).
 *
 * A genuine unit samples on its own crystal (offset ±50 ppm, drifting with temperature, plus
 * sampling jitter), digitises with a 12-bit ADC (noise floor, quantisation), applies its factory
 * calibration (gain/offset: the reported values sit on a lattice of step LSB·gain unless the
 * firmware rounds them), and picks up mains hum (50/60 Hz, its own amplitude). Impostors are
 * another unit of the same model at the same site, a software simulator emitting plausible
 * values on a timer, and a replay of recorded genuine data.
 *
 * Times are milliseconds on the simulated clock; `sourceTimes` are the unit's own timestamps of
 * its samples, `arrivalTimes` when the gateway received them (what a sensor that does not stamp
 * its readings leaves the model).
 */
import { SeededRandom } from './random';

export interface SensorModel {
  periodMs: number;
  adcBits: number;
  rangeLow: number;
  rangeHigh: number;
}

export const SENSOR_MODEL: SensorModel = { periodMs: 10, adcBits: 12, rangeLow: 0, rangeHigh: 100 };

/** What the sensor measures; shared by a genuine unit and anything that takes its place. */
export interface ProcessParams {
  level: number;
  swing: number;
  swingPeriodMs: number;
  wanderStd: number;
  wanderTauMs: number;
}

/** Where a unit is mounted and what firmware it runs: an impostor of the same model shares it. */
export interface Installation {
  mainsHz: 50 | 60;
  /** Firmware rounding of reported values (e.g. 0.01), or null when calibrated values are sent as is. */
  firmwareStep: number | null;
  process: ProcessParams;
}

/** One physical unit's parameters. */
export interface UnitParams {
  clockPpm: number;
  /** Tuning-fork crystals lose frequency with the square of the distance from 25 °C. */
  clockTempcoPpmPerK2: number;
  jitterUs: number;
  noiseLsb: number;
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

export type TimeSource = 'source' | 'arrival';

export function timesOf(recording: Recording, timeSource: TimeSource): Float64Array {
  return timeSource === 'source' ? recording.sourceTimes : recording.arrivalTimes;
}

const DAY_MS = 86_400_000;
const MICROSECOND = 1e-3;

function roundTo(value: number, step: number): number {
  return Math.round(value / step) * step;
}

export function drawInstallation(rng: SeededRandom): Installation {
  return {
    mainsHz: rng.next() < 0.7 ? 50 : 60,
    firmwareStep: rng.next() < 0.5 ? 0.01 : null,
    process: {
      level: rng.uniform(15, 85),
      swing: rng.uniform(0, 5),
      swingPeriodMs: rng.uniform(30_000, 600_000),
      wanderStd: rng.uniform(0.05, 0.3),
      wanderTauMs: rng.uniform(5_000, 60_000),
    },
  };
}

export function drawUnit(rng: SeededRandom): UnitParams {
  return {
    clockPpm: rng.uniform(-50, 50),
    clockTempcoPpmPerK2: -0.034 * rng.logNormal(1, 0.1),
    jitterUs: rng.logNormal(3, 0.5),
    noiseLsb: rng.logNormal(1.5, 0.4),
    gain: 1 + 0.004 * rng.gaussian(),
    offset: 0.1 * rng.gaussian(),
    gainTempcoPpmPerK: rng.uniform(10, 50),
    mainsAmpLsb: rng.logNormal(1, 0.6),
    thermalOffsetK: rng.uniform(0, 8),
    latencyMs: rng.uniform(0.5, 5),
    latencyJitterMs: rng.logNormal(0.3, 0.5),
  };
}

/** The measured process, an Ornstein-Uhlenbeck wander around a slow swing, stepped per sample. */
class ProcessSignal {
  private wander: number;

  constructor(
    private readonly params: ProcessParams,
    private readonly rng: SeededRandom,
  ) {
    this.wander = params.wanderStd * rng.gaussian();
  }

  at(timeMs: number, stepMs: number): number {
    const { level, swing, swingPeriodMs, wanderStd, wanderTauMs } = this.params;
    const decay = Math.exp(-stepMs / wanderTauMs);
    this.wander = this.wander * decay + wanderStd * Math.sqrt(1 - decay * decay) * this.rng.gaussian();
    return level + swing * Math.sin((2 * Math.PI * timeMs) / swingPeriodMs) + this.wander;
  }
}

interface Source {
  record(startMs: number, count: number): Recording;
}

/** A genuine unit of SENSOR_MODEL, or another unit of it put in its place. */
export class SimulatedSensor implements Source {
  private readonly rng: SeededRandom;

  constructor(
    readonly installation: Installation,
    readonly unit: UnitParams,
    seed: number,
    readonly model: SensorModel = SENSOR_MODEL,
  ) {
    this.rng = new SeededRandom(seed);
  }

  private temperature(timeMs: number): number {
    return 25 + this.unit.thermalOffsetK + 2 * Math.sin((2 * Math.PI * timeMs) / DAY_MS);
  }

  record(startMs: number, count: number): Recording {
    const { unit, installation, model, rng } = this;
    const lsb = (model.rangeHigh - model.rangeLow) / 2 ** model.adcBits;
    const maxCode = 2 ** model.adcBits - 1;
    const process = new ProcessSignal(installation.process, rng);
    // The grid is never exactly at its nominal frequency, so the hum's phase against the samples
    // is new in every recording: its amplitude carries identity, its phase does not.
    const mainsHz = installation.mainsHz + 0.02 * rng.gaussian();
    const mainsPhase = rng.uniform(0, 2 * Math.PI);
    const recording: Recording = {
      values: new Float64Array(count),
      sourceTimes: new Float64Array(count),
      arrivalTimes: new Float64Array(count),
    };
    let tick = startMs;
    for (let i = 0; i < count; i++) {
      const temperature = this.temperature(tick);
      const dT = temperature - 25;
      const ppm = unit.clockPpm + unit.clockTempcoPpmPerK2 * dT * dT;
      const sampledAt = tick + unit.jitterUs * MICROSECOND * rng.gaussian();
      tick += model.periodMs * (1 + ppm * 1e-6);

      const analog =
        process.at(sampledAt, model.periodMs) +
        unit.noiseLsb * lsb * rng.gaussian() +
        unit.mainsAmpLsb * lsb * Math.sin((2 * Math.PI * mainsHz * sampledAt) / 1000 + mainsPhase);
      const code = Math.min(maxCode, Math.max(0, Math.round((analog - model.rangeLow) / lsb)));
      // The firmware compensates with its own temperature reading, in 0.1 K steps.
      const measuredDT = Math.round(dT * 10) / 10;
      const gain = unit.gain * (1 + unit.gainTempcoPpmPerK * 1e-6 * measuredDT);
      let value = model.rangeLow + code * lsb * gain + unit.offset + 0.002 * measuredDT;
      if (installation.firmwareStep !== null) value = roundTo(value, installation.firmwareStep);

      recording.values[i] = value;
      recording.sourceTimes[i] = roundTo(sampledAt, MICROSECOND);
      recording.arrivalTimes[i] = roundTo(
        sampledAt + unit.latencyMs + rng.exponential(unit.latencyJitterMs),
        MICROSECOND,
      );
    }
    return recording;
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
    readonly model: SensorModel = SENSOR_MODEL,
  ) {
    this.rng = new SeededRandom(seed);
    const lsb = (model.rangeHigh - model.rangeLow) / 2 ** model.adcBits;
    this.timerJitterMs = this.rng.logNormal(0.3, 0.8);
    this.noise = this.rng.logNormal(1.5, 0.4) * lsb;
    this.decimals = this.rng.next() < 0.5 ? 2 : null;
  }

  record(startMs: number, count: number): Recording {
    const { rng, model } = this;
    const process = new ProcessSignal(this.installation.process, rng);
    const recording: Recording = {
      values: new Float64Array(count),
      sourceTimes: new Float64Array(count),
      arrivalTimes: new Float64Array(count),
    };
    for (let i = 0; i < count; i++) {
      const spike = rng.next() < 0.01 ? rng.uniform(2, 10) : 0;
      const firedAt = startMs + i * model.periodMs + Math.abs(this.timerJitterMs * rng.gaussian()) + spike;
      const value = process.at(firedAt, model.periodMs) + this.noise * rng.gaussian();
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
