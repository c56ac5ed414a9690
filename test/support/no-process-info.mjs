// Loaded first in each test process (NODE_OPTIONS, scripts/two-groups.sh), before tap's
// process-info hook reads its pattern of files to leave out: one that matches every file.
// The hook records every module a test process loads, reading its source again and counting
// its lines, for coverage maps and `tap --changed`, neither of which the suite uses: 1.2 to
// 1.8 s of CPU for a test file that loads much of src/ (test/unit/config.test.ts). tap's
// runner sets the pattern for each file it starts, so an environment variable of the
// suite's own would not reach the hook.
process.env._TAPJS_PROCESSINFO_EXCLUDE_ = '/./';
