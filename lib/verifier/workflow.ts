/**
 * The orchestrated workflow: an ordered list of steps, each pass / fail / review. A step whose
 * evidence is absent is skipped unless it says `required: true`, but for a device that registered
 * a fingerprint, fingerprint evidence is always required. Evidence that is present but
 * unscored or that the edge check called untrusted is not absent: it reviews (or, when its score
 * is low, fails), never passes. `hardwareKey` passes a device that registered its key as held by
 * a TPM or an HSM. Any fail declines, else any review puts the session in review, else it is
 * approved.
 */
import { matchRatio, type Fingerprint } from '../edge/fingerprint';
import * as s from '../schema';
import type { Decision, WorkflowStep } from './types';

export const DEFAULT_WORKFLOW: WorkflowStep[] = [
  { step: 'signature' },
  { step: 'fingerprint', minMatch: 0.75 },
  { step: 'tinyml', minScore: 0.6, review: 0.8 },
];

const ratio = s.optional(s.number({ min: 0, max: 1 }));
const stepSchemas = {
  signature: s.object({ step: s.literal('signature') }),
  fingerprint: s.object({ step: s.literal('fingerprint'), minMatch: ratio, required: s.optional(s.boolean()) }),
  tinyml: s.object({ step: s.literal('tinyml'), minScore: ratio, review: ratio, required: s.optional(s.boolean()) }),
  hardwareKey: s.object({ step: s.literal('hardwareKey') }),
};

export const workflowSchema: s.Schema<WorkflowStep[]> = {
  parse(value, path = 'workflow') {
    return s
      .array(s.unknownValue(), { maxItems: 16 })
      .parse(value, path)
      .map((step, i) => {
        const name = s.isPlainObject(step) ? step.step : undefined;
        const schema = stepSchemas[name as keyof typeof stepSchemas];
        if (!schema)
          return s
            .literal('signature', 'fingerprint', 'tinyml', 'hardwareKey')
            .parse(name, `${path}[${i}].step`) as never;
        return schema.parse(step, `${path}[${i}]`) as WorkflowStep;
      });
  },
};

export interface Evidence {
  /** The signature was checked before the workflow runs; a bad one never gets here. */
  signatureValid: boolean;
  registeredFingerprint: Fingerprint;
  fingerprint?: { components: Record<string, string> };
  tinyml?: TinymlEvidence;
  /** Where the device said, at registration, that its key lives: `file`, `pkcs11`, `tpm`. */
  keyStorage?: unknown;
}

/** What the edge's behaviour check said; `score` is null when it could not score (warming up, ...). */
export interface TinymlEvidence {
  score: number | null;
  model: string;
  trusted?: boolean;
  reason?: string;
}

/** Reasons that put a session in review rather than decline it. */
const REVIEW_REASONS = new Set(['tinyml_review', 'tinyml_unscored', 'tinyml_untrusted']);

export interface WorkflowResult {
  decision: Decision;
  reasons: string[];
  /** Names of the steps that passed: the token's `amr`. */
  passed: string[];
  score?: number;
}

export function runWorkflow(steps: WorkflowStep[], evidence: Evidence): WorkflowResult {
  const reasons: string[] = [];
  const passed: string[] = [];
  for (const step of steps) {
    switch (step.step) {
      case 'signature':
        if (evidence.signatureValid) passed.push('signature');
        else reasons.push('bad_signature');
        break;
      case 'fingerprint': {
        if (!evidence.fingerprint) {
          // A device that registered a fingerprint always has one to show: leaving it out is what
          // its key copied to other hardware would do, so it is missing, not skipped.
          const registered = Object.keys(evidence.registeredFingerprint.components).length > 0;
          if (step.required || registered) reasons.push('fingerprint_missing');
          break;
        }
        const match = matchRatio(evidence.registeredFingerprint.components, evidence.fingerprint.components);
        if (match >= (step.minMatch ?? 0.75)) passed.push('fingerprint');
        else reasons.push('fingerprint_mismatch');
        break;
      }
      case 'tinyml': {
        const tinyml = evidence.tinyml;
        if (!tinyml) {
          if (step.required) reasons.push('tinyml_missing');
          break;
        }
        const reason = tinymlReason(tinyml, step.minScore ?? 0.6, step.review ?? 0.8);
        if (reason) reasons.push(reason);
        else passed.push('tinyml');
        break;
      }
      case 'hardwareKey':
        // The device's own word at registration (metadata.keyStorage), not proof: see
        // docs/hardware-keys.md. It keeps out file keys of devices that never claimed more.
        if (evidence.keyStorage === 'pkcs11' || evidence.keyStorage === 'tpm') passed.push('hardwareKey');
        else reasons.push('key_not_hardware');
        break;
    }
  }
  const failed = reasons.some(reason => !REVIEW_REASONS.has(reason));
  const review = reasons.some(reason => REVIEW_REASONS.has(reason));
  return {
    decision: failed ? 'declined' : review ? 'in_review' : 'approved',
    reasons,
    passed,
    score: evidence.tinyml?.score ?? undefined,
  };
}

/** Why the tinyml step does not pass, or undefined when it does. */
function tinymlReason(tinyml: TinymlEvidence, minScore: number, reviewBelow: number): string | undefined {
  if (tinyml.score !== null && tinyml.score < minScore) return 'tinyml_low';
  if (tinyml.score === null) return 'tinyml_unscored';
  if (tinyml.trusted === false) return 'tinyml_untrusted';
  return tinyml.score < reviewBelow ? 'tinyml_review' : undefined;
}
