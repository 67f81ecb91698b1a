// The middleware of Amplify's Next.js guide, plus the two answers every real app grows: a
// redirect and a rewrite. fetchAuthSession refreshes an expired access token and writes the new
// cookies on `response`; the redirect and the rewrite are *other* responses, so those cookies
// never reach the browser. This is the bug cookieguard exists for: keep it as it is.
import { fetchAuthSession } from 'aws-amplify/auth/server';
import { type NextRequest, NextResponse } from 'next/server';
import { runWithAmplifyServerContext } from './amplify-server';

export async function proxy(request: NextRequest) {
  const response = NextResponse.next();
  const authenticated = await runWithAmplifyServerContext({
    nextServerContext: { request, response },
    operation: async (contextSpec) => {
      try {
        const session = await fetchAuthSession(contextSpec);
        return session.tokens?.accessToken !== undefined;
      } catch {
        return false;
      }
    },
  });
  const { pathname } = request.nextUrl;
  if (!authenticated) {
    return NextResponse.redirect(new URL('/sign-in', request.url));
  }
  if (pathname === '/go') {
    // e.g. "after this action, go to the dashboard"
    return NextResponse.redirect(new URL('/dashboard', request.url));
  }
  if (pathname === '/profile') {
    // e.g. a locale or tenant rewrite
    return NextResponse.rewrite(new URL('/dashboard?via=rewrite', request.url));
  }
  return response;
}

export const config = {
  matcher: ['/dashboard', '/go', '/profile'],
};
