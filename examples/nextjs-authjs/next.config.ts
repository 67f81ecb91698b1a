import type { NextConfig } from 'next';

const nextConfig: NextConfig = {
  // No telemetry, no image optimiser: the example runs offline on loopback.
  images: { unoptimized: true },
};

export default nextConfig;
