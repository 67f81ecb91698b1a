// The middleware many next-auth apps grow, and the race the refresh guide admits: it refreshes an
// expired session itself (the guide's code, then `encode`) and writes the new cookie on
// `response`; but the redirect and the rewrite are *other* responses, so the new cookie never
// reaches the browser, and the server component of the same request still reads the old cookie
// and refreshes again with the refresh token just spent. This is the bug cookieguard exists for:
// keep it as it is.
import { encode, getToken } from 'next-auth/jwt';
import { type NextRequest, NextResponse } from 'next/server';
import { refreshedToken, secret } from './auth';

const SESSION_COOKIE = 'next-auth.session-token';
const MAX_AGE_S = 30 * 24 * 60 * 60;

export async function proxy(request: NextRequest) {
  const token = await getToken({ req: request, secret: secret() });
  if (!token) {
    return NextResponse.redirect(new URL('/sign-in', request.url));
  }
  const response = NextResponse.next();
  if (!token.error) {
    const fresh = await refreshedToken(token);
    if (fresh !== token) {
      const value = await encode({ token: fresh, secret: secret(), maxAge: MAX_AGE_S });
      response.cookies.set(SESSION_COOKIE, value, { httpOnly: true, sameSite: 'lax', path: '/', maxAge: MAX_AGE_S });
    }
  }
  const { pathname } = request.nextUrl;
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
