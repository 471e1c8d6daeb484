// Prints jest's result file as the plain closing line CI reads: "N passed, N failed[, N skipped]".
import { existsSync, readFileSync } from 'node:fs';

const file = process.argv[2] ?? '.cache/test-results/jest.json';
if (!existsSync(file)) {
  console.log('0 passed, 0 failed');
  console.error(`(no test results in ${file}: the run stopped before jest reported)`);
} else {
  const r = JSON.parse(readFileSync(file, 'utf8')) as {
    numPassedTests: number;
    numFailedTests: number;
    numPendingTests: number;
    numTodoTests: number;
    numRuntimeErrorTestSuites: number;
  };
  const skipped = r.numPendingTests + r.numTodoTests;
  // A suite that crashed before its tests ran counts as a failure too.
  const failed = r.numFailedTests + r.numRuntimeErrorTestSuites;
  console.log(`${r.numPassedTests} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
}
