// Builds dist/esm (ESM) and dist/cjs (CommonJS) from src, with types for both: the package
// is "type": "module", so dist/cjs gets a package.json of its own saying its .js files are
// CommonJS. With --tests, also compiles src and test into dist-test (never shipped).
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

// typescript's own bin (its exports map lists only package.json of its files).
const tsc = join(dirname(createRequire(import.meta.url).resolve("typescript/package.json")), "bin", "tsc");
const compile = (project) => {
  try {
    execFileSync(process.execPath, [tsc, "-p", project], { stdio: "inherit" });
  } catch {
    process.exit(1); // tsc has said what is wrong
  }
};

rmSync("dist", { recursive: true, force: true });
compile("tsconfig.json");
compile("tsconfig.cjs.json");
mkdirSync("dist/cjs", { recursive: true });
writeFileSync("dist/cjs/package.json", '{ "type": "commonjs" }\n');
if (process.argv.includes("--tests")) {
  rmSync("dist-test", { recursive: true, force: true });
  compile("tsconfig.test.json");
}
