import type { ReactNode } from 'react';
import { amplifyConfig } from '../amplify-config';
import { ConfigureAmplify } from './configure-amplify';

export const dynamic = 'force-dynamic';

export default function RootLayout({ children }: { children: ReactNode }) {
  return (
    <html lang="en">
      <body style={{ fontFamily: 'sans-serif', margin: '2rem' }}>
        <ConfigureAmplify config={amplifyConfig()} />
        {children}
      </body>
    </html>
  );
}
