import type { ReactNode } from 'react';
import { amplifyConfig } from '../amplify-config';
import { ConfigureAmplify } from './configure-amplify';

export const dynamic = 'force-dynamic';

// cookieguard's session health check (public/session-health.js, a copy of the repository's
// examples/session-health.js): keeps an idle tab's session fresh through cookieguard's session
// endpoint and sends a user whose session is over to this app's sign-in page. Read at run time,
// like the Amplify config, so one build serves any admin_prefix and poll interval.
function sessionHealth() {
  return {
    endpoint: process.env.COOKIEGUARD_SESSION_ENDPOINT ?? '/.cookieguard/session',
    intervalMs: process.env.SESSION_HEALTH_INTERVAL_MS ?? '60000',
  };
}

export default function RootLayout({ children }: { children: ReactNode }) {
  const health = sessionHealth();
  return (
    <html lang="en">
      <body style={{ fontFamily: 'sans-serif', margin: '2rem' }}>
        <ConfigureAmplify config={amplifyConfig()} />
        {children}
        <script
          src="/session-health.js"
          defer
          data-endpoint={health.endpoint}
          data-sign-in="/sign-in"
          data-interval-ms={health.intervalMs}
        />
      </body>
    </html>
  );
}
