// Preloaded into `next start` (NODE_OPTIONS=--require) by the end-to-end test, never by the app.
// Amplify's server-side token check (aws-jwt-verify) fetches the user pool's keys from
// https://cognito-idp.<region>.amazonaws.com/<poolId>/.well-known/jwks.json, derived from the pool
// id, with no setting to change it. Here that one URL is sent to the local emulator instead
// (COGNITO_JWKS_ORIGIN, e.g. http://127.0.0.1:5001), which serves the same path. Everything else
// goes out untouched.
'use strict';

const http = require('node:http');
const https = require('node:https');

const origin = process.env.COGNITO_JWKS_ORIGIN;
const JWKS = /^https:\/\/cognito-idp\.[a-z0-9-]+\.amazonaws\.com(\/[^/?#]+\/\.well-known\/jwks\.json)$/;

function emulatorUrl(url) {
  const match = JWKS.exec(url instanceof URL ? url.href : String(url));
  return match ? origin + match[1] : null;
}

function announce(from, to) {
  process.stderr.write(`jwks-redirect: ${from} -> ${to}\n`);
}

if (origin) {
  const originalRequest = https.request;
  https.request = function request(url, ...rest) {
    const target = typeof url === 'string' || url instanceof URL ? emulatorUrl(url) : null;
    if (target === null) {
      return originalRequest.call(this, url, ...rest);
    }
    announce(url, target);
    // An https Agent in the options cannot carry plain http.
    const [options, ...more] = rest;
    if (options && typeof options === 'object') {
      const { agent, ...plain } = options;
      return http.request(target, plain, ...more);
    }
    return http.request(target, ...rest);
  };

  const originalFetch = globalThis.fetch;
  if (typeof originalFetch === 'function') {
    globalThis.fetch = function fetch(input, init) {
      const url = input instanceof Request ? input.url : input;
      const target = emulatorUrl(url);
      if (target === null) {
        return originalFetch(input, init);
      }
      announce(url, target);
      return originalFetch(target, input instanceof Request ? { ...init, method: input.method } : init);
    };
  }
}
