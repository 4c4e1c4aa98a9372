/**
 * Config node: where the identity API is, and the credentials to use with it. Like the MQTT
 * broker node, it owns the one connection (an API client with keep-alive) that every node using
 * it shares.
 */
import type { NodeAPI, NodeDef } from 'node-red';
import { IdentityApiClient } from '../../lib/edge/api-client';
import type { IdentityApiCredentials, IdentityApiNode } from '../shared/config-nodes';
import { localVerifierUrl } from '../shared/node-kit';

interface IdentityApiDef extends NodeDef {
  baseUrl: string;
  timeout: string | number;
}

export = (RED: NodeAPI) => {
  function IdentityApi(this: IdentityApiNode, config: IdentityApiDef) {
    RED.nodes.createNode(this, config);
    let client: IdentityApiClient | undefined;

    this.client = () => {
      client ??= new IdentityApiClient({
        baseUrl: config.baseUrl?.trim() || localVerifierUrl(RED),
        timeoutMs: Number(config.timeout) || 10_000,
        enrollmentToken: this.credentials.enrollmentToken || undefined,
        apiKey: this.credentials.apiKey || undefined,
      });
      return client;
    };

    this.on('close', (done: () => void) => {
      client?.close();
      client = undefined;
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
