'use strict';
// Mocha's spec output, plus the run's counts written to $M2M_TEST_COUNTS for scripts/test.js to add up.
const fs = require('node:fs');
const Mocha = require('mocha');

class CountReporter extends Mocha.reporters.Spec {
  constructor(runner, options) {
    super(runner, options);
    runner.once(Mocha.Runner.constants.EVENT_RUN_END, () => {
      const { passes = 0, failures = 0, pending = 0 } = runner.stats ?? {};
      if (process.env.M2M_TEST_COUNTS)
        fs.writeFileSync(process.env.M2M_TEST_COUNTS, JSON.stringify({ passes, failures, pending }));
    });
  }
}

module.exports = CountReporter;
