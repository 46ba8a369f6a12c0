// The server's CPU per decision for 64 concurrent checks from this client, over the
// CheckStream and as unary Checks, in alternating blocks of one run. The server must run on
// this machine: its CPU time is read from /proc/<pid>/stat before and after each block.
//
//   npm run build && node scripts/cpu-per-decision.mjs HOST:PORT SERVER_PID [BLOCKS] [CHECKS_PER_BLOCK]
import { readFileSync } from "node:fs";
import { PatternsClient, Policy } from "../dist/esm/index.js";

const [target, pid, blocks = "6", perBlock = "20000"] = process.argv.slice(2);
if (!target || !pid) {
  console.error("usage: node scripts/cpu-per-decision.mjs HOST:PORT SERVER_PID [BLOCKS] [CHECKS_PER_BLOCK]");
  process.exit(2);
}
const CONCURRENT = 64;
const TICKS_PER_SECOND = 100; // Linux's USER_HZ

/** The server process's CPU seconds so far (utime + stime). */
function cpuSeconds() {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
}

const policy = Policy.gcra(1_000_000, 1_000); // admits everything: every check is decided alike
const clients = {
  stream: new PatternsClient(target, { timeoutMs: 30_000 }),
  unary: new PatternsClient(target, { timeoutMs: 30_000, streamChecks: false }),
};

/** `n` checks, CONCURRENT at a time: the server's CPU seconds and the wall seconds taken. */
async function block(mode, n) {
  let left = n;
  const worker = async (number) => {
    while (left-- > 0) {
      if ((await clients[mode].ratelimit.check(`cpu:${number}`, policy)).fallback) {
        throw new Error("a fallback: the server did not answer");
      }
    }
  };
  const [cpu, wall] = [cpuSeconds(), performance.now()];
  await Promise.all(Array.from({ length: CONCURRENT }, (_, number) => worker(number)));
  return { cpu: cpuSeconds() - cpu, wall: (performance.now() - wall) / 1_000 };
}

await block("stream", 2_000); // warm both up
await block("unary", 2_000);
const total = { stream: { cpu: 0, wall: 0 }, unary: { cpu: 0, wall: 0 } };
for (let i = 0; i < Number(blocks); i++) {
  for (const mode of i % 2 ? ["unary", "stream"] : ["stream", "unary"]) {
    const { cpu, wall } = await block(mode, Number(perBlock));
    total[mode].cpu += cpu;
    total[mode].wall += wall;
  }
}
const checks = Number(blocks) * Number(perBlock);
const micros = (mode) => (1e6 * total[mode].cpu) / checks;
for (const mode of ["stream", "unary"]) {
  console.log(`${mode}: ${micros(mode).toFixed(1)} us of server CPU per decision, ${(checks / total[mode].wall).toFixed(0)} decisions/s`);
}
console.log(`stream / unary: ${(micros("stream") / micros("unary")).toFixed(2)} of the CPU per decision`);
clients.stream.close();
clients.unary.close();
