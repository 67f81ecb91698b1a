import { login } from './actions';

export default async function LoginPage({ searchParams }: { searchParams: Promise<{ error?: string }> }) {
  const { error } = await searchParams;
  return (
    <main>
      <h1>Sign in</h1>
      <form action={login}>
        <p>
          <label>
            Email <input name="email" type="email" autoComplete="username" />
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
