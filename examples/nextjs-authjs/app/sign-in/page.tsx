'use client';

import { signIn } from 'next-auth/react';

export default function SignIn() {
  return (
    <main>
      <h1>Not signed in</h1>
      <button id="sign-in" type="button" onClick={() => signIn('oidc', { callbackUrl: '/dashboard' })}>
        Sign in with the test IdP
      </button>
    </main>
  );
}
