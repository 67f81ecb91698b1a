import { fetchAuthSession } from 'aws-amplify/auth/server';
import { cookies } from 'next/headers';
import { redirect } from 'next/navigation';
import { runWithAmplifyServerContext } from '../../amplify-server';

export default async function Dashboard({
  searchParams,
}: {
  searchParams: Promise<{ via?: string }>;
}) {
  const { via } = await searchParams;
  const session = await runWithAmplifyServerContext({
    nextServerContext: { cookies },
    operation: (contextSpec) => fetchAuthSession(contextSpec),
  });
  const accessToken = session.tokens?.accessToken;
  if (!accessToken) {
    redirect('/sign-in');
  }
  const username = String(session.tokens?.idToken?.payload['cognito:username'] ?? accessToken.payload.username);
  const expiresAt = new Date((accessToken.payload.exp ?? 0) * 1000).toISOString();
  return (
    <main>
      <h1>Dashboard</h1>
      <p id="user">Signed in as {username}</p>
      <p id="expires">Access token expires at {expiresAt}</p>
      <p id="via">Reached {via === 'rewrite' ? 'through the rewrite of /profile' : 'directly'}</p>
      <p>
        <a id="go" href="/go">
          /go (the middleware redirects)
        </a>{' '}
        · <a id="profile" href="/profile">/profile (the middleware rewrites)</a>
      </p>
    </main>
  );
}
