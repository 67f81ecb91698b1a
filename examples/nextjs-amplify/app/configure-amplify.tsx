'use client';

import type { ResourcesConfig } from 'aws-amplify';
import { Amplify } from 'aws-amplify';

let configured = false;

// ssr: true keeps the tokens in cookies (not localStorage), where the server and cookieguard
// read them.
export function ConfigureAmplify({ config }: { config: ResourcesConfig }) {
  if (!configured) {
    Amplify.configure(config, { ssr: true });
    configured = true;
  }
  return null;
}
