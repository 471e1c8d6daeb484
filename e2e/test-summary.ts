// Prints jest's result files as the plain closing line CI reads: "N passed, N failed[, N skipped]".
// `make test` runs jest twice (the QEMU tests on their own): every file named is summed.
import { existsSync, readFileSync } from 'node:fs';

const files = process.argv.length > 2 ? process.argv.slice(2) : ['.cache/test-results/jest.json'];
let passed = 0;
let failed = 0;
let skipped = 0;
for (const file of files) {
  if (!existsSync(file)) {
    failed += 1; // a run that stopped before jest reported is a failure, not nothing
    console.error(`(no test results in ${file}: the run stopped before jest reported)`);
    continue;
  }
  const r = JSON.parse(readFileSync(file, 'utf8')) as {
    numPassedTests: number;
    numFailedTests: number;
    numPendingTests: number;
    numTodoTests: number;
    numRuntimeErrorTestSuites: number;
  };
  passed += r.numPassedTests;
  skipped += r.numPendingTests + r.numTodoTests;
  // A suite that crashed before its tests ran counts as a failure too.
  failed += r.numFailedTests + r.numRuntimeErrorTestSuites;
}
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
