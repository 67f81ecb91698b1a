'use client';

import { signIn } from 'aws-amplify/auth';
import { type FormEvent, useState } from 'react';

export default function SignIn() {
  const [error, setError] = useState('');

  async function onSubmit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    setError('');
    try {
      const { isSignedIn, nextStep } = await signIn({
        username: String(form.get('username')),
        password: String(form.get('password')),
        options: { authFlowType: 'USER_PASSWORD_AUTH' },
      });
      if (!isSignedIn) {
        setError(`sign-in needs another step: ${nextStep.signInStep}`);
        return;
      }
      window.location.assign('/dashboard');
    } catch (caught) {
      setError(caught instanceof Error ? `${caught.name}: ${caught.message}` : String(caught));
    }
  }

  return (
    <main>
      <h1>Sign in</h1>
      <form onSubmit={onSubmit}>
        <p>
          <label>
            Username <input name="username" autoComplete="username" />
          </label>
        </p>
        <p>
          <label>
            Password <input name="password" type="password" autoComplete="current-password" />
          </label>
        </p>
        <button type="submit">Sign in</button>
      </form>
      {error && <p id="error">{error}</p>}
    </main>
  );
}
