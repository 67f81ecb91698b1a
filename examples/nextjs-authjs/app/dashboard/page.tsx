// A server component that reads the session the way the guide shows: getServerSession runs the
// `jwt` callback, which refreshes an expired session (and cannot write the result back: server
// components cannot set cookies), then shows the user or the session's error.
import { getServerSession } from 'next-auth';
import { authOptions } from '../../auth';

export default async function Dashboard({ searchParams }: { searchParams: Promise<{ via?: string }> }) {
  const session = await getServerSession(authOptions);
  const { via } = await searchParams;
  if (!session) {
    return (
      <main>
        <h1>Not signed in</h1>
        <a href="/sign-in">Sign in</a>
      </main>
    );
  }
  if (session.error) {
    return (
      <main>
        <h1>Session error: {session.error}</h1>
        <p>The app would sign the user out here, as the refresh guide does.</p>
        <a href="/sign-in">Sign in again</a>
      </main>
    );
  }
  return (
    <main>
      <p>Signed in as {session.user?.name}</p>
      <p>{via === 'rewrite' ? 'Reached through the rewrite' : 'Reached directly'}</p>
      <p>
        <a id="go" href="/go">
          Go (a redirect)
        </a>{' '}
        ·{' '}
        <a id="profile" href="/profile">
          Profile (a rewrite)
        </a>
      </p>
    </main>
  );
}
