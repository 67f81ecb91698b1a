"""`cookieguard demo`: see the bug and the fix on this machine, with nothing else running.

Three parts, all on 127.0.0.1, all in this process:

- a local Cognito-compatible IdP (`cookieguard.ops.demo.emulator`: moto's server, the `demo` extra) whose
  app client rotates refresh tokens (a used refresh token is rejected) and whose access tokens
  live a few seconds;
- an app with the seed's bug (`demo.app`): its middleware refreshes an expired token itself,
  writes the new cookies on one response and answers with a redirect that drops them;
- cookieguard (`build_app`) in front of that app.

`run_demo` drives a scripted browser (`demo.browser`) through the app twice, directly and through
cookieguard, past several access-token expiries, and prints each request, its status, the cookies
the browser got, who refreshed at the IdP and whether the user is still signed in, then a verdict
counted at the IdP and in the browser. `serve_demo` leaves the app and cookieguard running for a
person with a browser. Nothing here ever prints a token: cookies are shown by name only.
"""

from cookieguard.ops.demo.story import DemoSettings, run_demo, serve_demo

__all__ = ["DemoSettings", "run_demo", "serve_demo"]
