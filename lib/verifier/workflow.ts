/**
 * The orchestrated workflow: an ordered list of steps, each pass / fail / review. A step whose
 * evidence is absent is skipped unless it says `required: true`. Any fail declines, else any
 * review puts the session in review, else it is approved.
 */
import { matchRatio, type Fingerprint } from '../fingerprint';
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
};

export const workflowSchema: s.Schema<WorkflowStep[]> = {
  parse(value, path = 'workflow') {
    return s.array(s.unknownValue(), { maxItems: 16 }).parse(value, path).map((step, i) => {
      const name = s.isPlainObject(step) ? step.step : undefined;
      const schema = stepSchemas[name as keyof typeof stepSchemas];
      if (!schema) return s.literal('signature', 'fingerprint', 'tinyml').parse(name, `${path}[${i}].step`) as never;
      return schema.parse(step, `${path}[${i}]`) as WorkflowStep;
    });
  },
};

export interface Evidence {
  /** The signature was checked before the workflow runs; a bad one never gets here. */
  signatureValid: boolean;
  registeredFingerprint: Fingerprint;
  fingerprint?: { components: Record<string, string> };
  tinyml?: { score: number; model: string };
}

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
  let review = false;
  for (const step of steps) {
    switch (step.step) {
      case 'signature':
        if (evidence.signatureValid) passed.push('signature');
        else reasons.push('bad_signature');
        break;
      case 'fingerprint': {
        if (!evidence.fingerprint) {
          if (step.required) reasons.push('fingerprint_missing');
          break;
        }
        const match = matchRatio(evidence.registeredFingerprint.components, evidence.fingerprint.components);
        if (match >= (step.minMatch ?? 0.75)) passed.push('fingerprint');
        else reasons.push('fingerprint_mismatch');
        break;
      }
      case 'tinyml': {
        if (!evidence.tinyml) {
          if (step.required) reasons.push('tinyml_missing');
          break;
        }
        const { score } = evidence.tinyml;
        if (score < (step.minScore ?? 0.6)) reasons.push('tinyml_low');
        else if (score < (step.review ?? 0.8)) { review = true; reasons.push('tinyml_review'); }
        else passed.push('tinyml');
        break;
      }
    }
  }
  const failed = reasons.some(reason => reason !== 'tinyml_review');
  return {
    decision: failed ? 'declined' : review ? 'in_review' : 'approved',
    reasons,
    passed,
    score: evidence.tinyml?.score,
  };
}
