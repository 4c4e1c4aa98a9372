/**
 * Config node: where the identity API is, and the credentials to use with it. Like the MQTT
 * broker node, it owns the one connection (an API client with keep-alive) that every node using
 * it shares.
 */
import type { NodeAPI, NodeDef } from 'node-red';
import { DiditClient } from '../../lib/didit/client';
import { IdentityApiClient } from '../../lib/edge/api-client';
import { M2MError } from '../../lib/errors';
import type { IdentityApiCredentials, IdentityApiNode, IdentityProvider } from '../shared/config-nodes';
import { localVerifierUrl } from '../shared/node-kit';

interface IdentityApiDef extends NodeDef {
  provider?: IdentityProvider;
  baseUrl: string;
  timeout: string | number;
}

export = (RED: NodeAPI) => {
  function IdentityApi(this: IdentityApiNode, config: IdentityApiDef) {
    RED.nodes.createNode(this, config);
    let client: IdentityApiClient | undefined;
    let didit: DiditClient | undefined;
    this.provider = config.provider === 'didit' ? 'didit' : 'm2m';
    const wrongProvider = (needed: IdentityProvider) =>
      new M2MError(
        'wrong_provider',
        needed === 'm2m'
          ? `identity API "${config.name || config.id}" is Didit's: this node needs an m2m identity API`
          : `identity API "${config.name || config.id}" is an m2m one: this node needs a Didit configuration`,
        400,
      );

    this.didit = () => {
      if (this.provider !== 'didit') throw wrongProvider('didit');
      didit ??= new DiditClient({
        baseUrl: config.baseUrl?.trim() || undefined,
        apiKey: this.credentials.apiKey ?? '',
        timeoutMs: Number(config.timeout) || 20_000,
      });
      return didit;
    };

    /** Empty: the m2m-verifier at /m2m in this Node-RED; `/path`: the one at that path; else the URL. */
    const verifierUrl = (configured: string | undefined) => {
      const given = configured?.trim();
      if (!given) return localVerifierUrl(RED);
      return given.startsWith('/') ? localVerifierUrl(RED, given) : given;
    };

    this.client = () => {
      if (this.provider !== 'm2m') throw wrongProvider('m2m');
      client ??= new IdentityApiClient({
        baseUrl: verifierUrl(config.baseUrl),
        timeoutMs: Number(config.timeout) || 10_000,
        enrollmentToken: this.credentials.enrollmentToken || undefined,
        apiKey: this.credentials.apiKey || undefined,
      });
      return client;
    };

    this.on('close', (done: () => void) => {
      client?.close();
      didit?.close();
      client = undefined;
      didit = undefined;
      done();
    });
  }

  RED.nodes.registerType<IdentityApiNode, IdentityApiDef, object, IdentityApiCredentials>(
    'm2m-identity-api',
    IdentityApi,
    {
      credentials: {
        apiKey: { type: 'password' },
        enrollmentToken: { type: 'password' },
        webhookSecret: { type: 'password' },
      },
    },
  );
};
