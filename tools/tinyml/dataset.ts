/**
 * Training and evaluation data: windows of features labelled by source, from the simulator or
 * from a user's own recordings (CSV or JSON lines of source, value, time).
 */
import * as fs from 'node:fs';
import * as readline from 'node:readline';
import { FEATURE_COUNT, FeatureExtractor, WINDOW } from '../../lib/tinyml/features';
import { SeededRandom } from './random';
import { drawInstallation, drawUnit, SimulatedSensor, timesOf, type Recording, type TimeSource } from './simulator';

export interface LabelledWindows {
  features: Float32Array;
  labels: Int32Array;
  classes: number;
  count: number;
  /** Consecutive classes in groups of this size share an installation (1: unrelated sources). */
  groupSize: number;
}

/** Features of consecutive, non-overlapping windows of a stream. */
export function windowFeatures(
  values: ArrayLike<number>,
  times: ArrayLike<number>,
  extractor = new FeatureExtractor(),
): Float32Array {
  const count = Math.floor(values.length / WINDOW);
  const out = new Float32Array(count * FEATURE_COUNT);
  for (let w = 0; w < count; w++) {
    const start = w * WINDOW;
    const slice = (a: ArrayLike<number>) => (a as Float64Array).subarray(start, start + WINDOW);
    extractor.extract(slice(values), slice(times), out, w * FEATURE_COUNT);
  }
  return out;
}

export function recordingFeatures(
  recording: Recording,
  timeSource: TimeSource,
  extractor?: FeatureExtractor,
): Float32Array {
  return windowFeatures(recording.values, timesOf(recording, timeSource), extractor);
}

/** Collects labelled feature rows without knowing the total up front. */
export class WindowCollector {
  private parts: Float32Array[] = [];
  private labels: number[] = [];

  add(features: Float32Array, label: number): void {
    this.parts.push(features);
    for (let i = 0; i < features.length / FEATURE_COUNT; i++) this.labels.push(label);
  }

  finish(classes: number, groupSize = 1): LabelledWindows {
    const features = new Float32Array(this.labels.length * FEATURE_COUNT);
    let offset = 0;
    for (const part of this.parts) {
      features.set(part, offset);
      offset += part.length;
    }
    return { features, labels: Int32Array.from(this.labels), classes, count: this.labels.length, groupSize };
  }
}

const INSTALLATION_UNITS = 4;

/**
 * Simulated training data: `units` units, INSTALLATION_UNITS to an installation (so training
 * sees what verification must tell apart: units of one model on one process), each recorded in
 * four sessions hours apart (temperature moves between them), seen through `timeSource`.
 */
export function simulatedTraining(
  seed: number,
  units: number,
  windowsPerUnit: number,
  timeSource: TimeSource,
): LabelledWindows {
  const rng = new SeededRandom(seed);
  const collector = new WindowCollector();
  const extractor = new FeatureExtractor();
  const sessions = 4;
  let installation = drawInstallation(rng);
  for (let u = 0; u < units; u++) {
    if (u % INSTALLATION_UNITS === 0) installation = drawInstallation(rng);
    const sensor = new SimulatedSensor(installation, drawUnit(rng, installation), rng.int(2 ** 31));
    const startMs = rng.uniform(0, 86_400_000);
    for (let s = 0; s < sessions; s++) {
      const recording = sensor.record(startMs + s * 3 * 3_600_000, Math.ceil(windowsPerUnit / sessions) * WINDOW);
      collector.add(recordingFeatures(recording, timeSource, extractor), u);
    }
  }
  return collector.finish(units, INSTALLATION_UNITS);
}

export interface RecordedSource {
  source: string;
  values: Float64Array;
  times: Float64Array;
}

export interface RecordingsFile {
  sources: RecordedSource[];
  skipped: number;
}

function parseLine(line: string, header: string[] | null): { source: string; value: number; time: number } | null {
  if (line.trimStart().startsWith('{')) {
    const row = JSON.parse(line) as { source?: unknown; value?: unknown; time?: unknown };
    return { source: String(row.source ?? ''), value: Number(row.value), time: Number(row.time) };
  }
  const cells = line.split(',').map(c => c.trim().replace(/^"|"$/g, ''));
  const at = (name: string, fallback: number) => cells[header ? header.indexOf(name) : fallback];
  return { source: at('source', 0) ?? '', value: Number(at('value', 1)), time: Number(at('time', 2)) };
}

/**
 * Reads recordings: CSV (header `source,value,time` in any column order, or those three columns
 * without a header) or JSON lines `{"source","value","time"}`; time in milliseconds. Rows that
 * are malformed, non-numeric or not after their source's previous time are skipped and counted.
 */
export async function readRecordings(file: string): Promise<RecordingsFile> {
  const bySource = new Map<string, { values: number[]; times: number[] }>();
  let header: string[] | null = null;
  let skipped = 0;
  let first = true;
  const lines = readline.createInterface({ input: fs.createReadStream(file), crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) continue;
    if (first) {
      first = false;
      const cells = line.split(',').map(c => c.trim().toLowerCase().replace(/^"|"$/g, ''));
      if (['source', 'value', 'time'].every(name => cells.includes(name))) {
        header = cells;
        continue;
      }
    }
    let row: ReturnType<typeof parseLine> | null;
    try {
      row = parseLine(line, header);
    } catch {
      row = null;
    }
    const series = row && bySource.get(row.source);
    if (
      !row?.source ||
      !Number.isFinite(row.value) ||
      !Number.isFinite(row.time) ||
      (series && row.time <= series.times[series.times.length - 1])
    ) {
      skipped++;
      continue;
    }
    if (!series) bySource.set(row.source, { values: [row.value], times: [row.time] });
    else {
      series.values.push(row.value);
      series.times.push(row.time);
    }
  }
  const sources = [...bySource].map(([source, s]) => ({
    source,
    values: Float64Array.from(s.values),
    times: Float64Array.from(s.times),
  }));
  return { sources, skipped };
}
