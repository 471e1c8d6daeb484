// Jest runs the TypeScript sources as ES modules through ts-jest (transpile only: `make test` runs
// `tsc --noEmit` as its own step). One real control plane serves the whole run (globalSetup).
export default {
  testEnvironment: 'node',
  extensionsToTreatAsEsm: ['.ts'],
  transform: {
    '^.+\\.ts$': [
      'ts-jest',
      { useESM: true, tsconfig: { isolatedModules: true, rewriteRelativeImportExtensions: false } },
    ],
  },
  testMatch: ['<rootDir>/operator/test/**/*.test.ts', '<rootDir>/e2e/**/*.test.ts'],
  globalSetup: '<rootDir>/e2e/cluster/jest-global-setup.ts',
  globalTeardown: '<rootDir>/e2e/cluster/jest-global-teardown.ts',
  testTimeout: 60_000,
  maxWorkers: 2,
};
