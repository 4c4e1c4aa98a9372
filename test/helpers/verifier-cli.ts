/** The standalone verifier as a child process, for tests that need a real separate server. */
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';

export const VERIFIER_BIN = path.join(__dirname, '..', '..', 'bin', 'm2m-verifier.js');

/** `--limits` for load from one address: all challenges come from loopback, far above one gateway's rate. */
export const NO_RATE_LIMITS = JSON.stringify({
  challengesPerDevice: { burst: 1e9, perSecond: 1e9 },
  challengesPerAddress: { burst: 1e9, perSecond: 1e9 },
});

/** Starts the CLI and resolves with its URL once it prints `listening on`. */
export function startCli(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ child: ChildProcess; url: string; stderr: () => string }> {
  const child = spawn(process.execPath, [VERIFIER_BIN, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', chunk => {
    stderr += chunk;
  });
  return new Promise((resolve, reject) => {
    let stdout = '';
    child.stdout!.on('data', chunk => {
      stdout += chunk;
      const url = stdout.match(/listening on (http:\/\/\S+)/)?.[1];
      if (url) resolve({ child, url, stderr: () => stderr });
    });
    child.on('exit', code => reject(new Error(`m2m-verifier exited with ${code}: ${stderr}`)));
  });
}
