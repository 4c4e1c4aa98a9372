/**
 * The verifier's metrics in Prometheus' text exposition format (version 0.0.4). Hand-written
 * rather than prom-client: counters and one histogram are a page of code, and a seventh runtime
 * dependency would cost the package its Flow Library score. Snapshots are plain data so the
 * processes of `--workers N` can send theirs to the primary, which adds them up.
 */

export const LATENCY_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

export interface HistogramSnapshot {
  /** Cumulative counts, one per LATENCY_BUCKETS_S bound (the +Inf bucket is `count`). */
  buckets: number[];
  count: number;
  sum: number;
}

/** Series keyed by `name{label="value",...}`. */
export interface MetricsSnapshot {
  counters: Record<string, number>;
  histograms: Record<string, HistogramSnapshot>;
}

const HELP: Record<string, { type: 'counter' | 'gauge' | 'histogram'; help: string }> = {
  m2m_attestations_total: { type: 'counter', help: 'Attestations decided, by decision.' },
  m2m_decision_reasons_total: {
    type: 'counter',
    help: 'Reasons given with decisions (an attestation may give several), by decision and reason.',
  },
  m2m_attestation_duration_seconds: {
    type: 'histogram',
    help: 'Time to decide an attestation, from parsed request to recorded decision.',
  },
  m2m_credential_refusals_total: {
    type: 'counter',
    help: 'Admin keys and enrollment tokens refused, by credential and outcome (wrong, or throttled before comparing).',
  },
  m2m_store_errors_total: { type: 'counter', help: 'Store operations that failed (database unreachable, timeouts).' },
  m2m_outbox_events_waiting: { type: 'gauge', help: 'Events written but not yet turned into webhook deliveries.' },
  m2m_webhook_deliveries_pending: { type: 'gauge', help: 'Webhook deliveries waiting for a (next) attempt.' },
  m2m_webhook_deliveries_dead: { type: 'gauge', help: 'Webhook deliveries that ran out of attempts (replayable).' },
  m2m_verifier_processes: { type: 'gauge', help: 'Verifier processes whose counters are summed here.' },
};

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

export function seriesKey(name: string, labels: Record<string, string> = {}): string {
  const pairs = Object.entries(labels).map(([label, value]) => `${label}="${escapeLabel(value)}"`);
  return pairs.length ? `${name}{${pairs.join(',')}}` : name;
}

export class Metrics {
  private readonly counters = new Map<string, number>();
  private readonly histograms = new Map<string, HistogramSnapshot>();

  count(name: string, labels?: Record<string, string>, by = 1): void {
    const key = seriesKey(name, labels);
    this.counters.set(key, (this.counters.get(key) ?? 0) + by);
  }

  observe(name: string, seconds: number, labels?: Record<string, string>): void {
    const key = seriesKey(name, labels);
    let histogram = this.histograms.get(key);
    if (!histogram) {
      histogram = { buckets: LATENCY_BUCKETS_S.map(() => 0), count: 0, sum: 0 };
      this.histograms.set(key, histogram);
    }
    for (let i = 0; i < LATENCY_BUCKETS_S.length; i++) if (seconds <= LATENCY_BUCKETS_S[i]) histogram.buckets[i]++;
    histogram.count++;
    histogram.sum += seconds;
  }

  snapshot(): MetricsSnapshot {
    return {
      counters: Object.fromEntries(this.counters),
      histograms: Object.fromEntries(
        [...this.histograms].map(([key, h]) => [key, { buckets: [...h.buckets], count: h.count, sum: h.sum }]),
      ),
    };
  }
}

/** The fleet-wide view: counters and histograms of several processes added up. */
export function mergeSnapshots(snapshots: MetricsSnapshot[]): MetricsSnapshot {
  const merged: MetricsSnapshot = { counters: {}, histograms: {} };
  for (const snapshot of snapshots) {
    for (const [key, value] of Object.entries(snapshot.counters))
      merged.counters[key] = (merged.counters[key] ?? 0) + value;
    for (const [key, histogram] of Object.entries(snapshot.histograms)) {
      merged.histograms[key] ??= { buckets: LATENCY_BUCKETS_S.map(() => 0), count: 0, sum: 0 };
      const into = merged.histograms[key];
      histogram.buckets.forEach((n, i) => {
        into.buckets[i] += n;
      });
      into.count += histogram.count;
      into.sum += histogram.sum;
    }
  }
  return merged;
}

function metricName(key: string): string {
  const brace = key.indexOf('{');
  return brace < 0 ? key : key.slice(0, brace);
}

/** `name{a="1"}` plus a label: `name_bucket{a="1",le="0.5"}`. */
function withLabel(key: string, suffix: string, label: string): string {
  const brace = key.indexOf('{');
  if (brace < 0) return `${key}${suffix}{${label}}`;
  return `${key.slice(0, brace)}${suffix}${key.slice(brace, -1)},${label}}`;
}

function withSuffix(key: string, suffix: string): string {
  const brace = key.indexOf('{');
  return brace < 0 ? `${key}${suffix}` : `${key.slice(0, brace)}${suffix}${key.slice(brace)}`;
}

/** The text format: each metric's HELP and TYPE once, then its series, sorted for stable output. */
export function renderPrometheus(snapshot: MetricsSnapshot, gauges: Record<string, number>): string {
  const lines = new Map<string, string[]>();
  const add = (key: string, line: string) => {
    const name = metricName(key);
    if (!lines.has(name)) lines.set(name, []);
    lines.get(name)!.push(line);
  };
  for (const [key, value] of Object.entries(snapshot.counters)) add(key, `${key} ${value}`);
  for (const [key, value] of Object.entries(gauges)) add(key, `${key} ${value}`);
  for (const [key, histogram] of Object.entries(snapshot.histograms)) {
    LATENCY_BUCKETS_S.forEach((bound, i) => {
      add(key, `${withLabel(key, '_bucket', `le="${bound}"`)} ${histogram.buckets[i]}`);
    });
    add(key, `${withLabel(key, '_bucket', 'le="+Inf"')} ${histogram.count}`);
    add(key, `${withSuffix(key, '_sum')} ${histogram.sum}`);
    add(key, `${withSuffix(key, '_count')} ${histogram.count}`);
  }
  const out: string[] = [];
  for (const name of [...lines.keys()].sort()) {
    const help = HELP[name];
    if (help) out.push(`# HELP ${name} ${help.help}`, `# TYPE ${name} ${help.type}`);
    out.push(...lines.get(name)!);
  }
  return `${out.join('\n')}\n`;
}
