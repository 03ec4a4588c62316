// Compiles TIP20ChannelReserveStandIn.sol with the pinned solcjs (offline, pure wasm) and
// writes TIP20ChannelReserveStandIn.json = {"solc", "abi", "deployedBytecode"}.
//
//   node tools/escrow-v2/compile.mjs           # (re)write the artifact
//   node tools/escrow-v2/compile.mjs --check   # exit 1 if the committed artifact is stale
//
// The output is deterministic: fixed settings, no metadata trailer in the bytecode (so
// comment-only edits do not change it), stable JSON formatting.

import { readFileSync, writeFileSync, existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'

const here = dirname(fileURLToPath(import.meta.url))
const require = createRequire(import.meta.url)
const solc = require('solc')

const PINNED_SOLC = '0.8.37'
const SOURCE = 'TIP20ChannelReserveStandIn.sol'
const CONTRACT = 'TIP20ChannelReserveStandIn'
const ARTIFACT = join(here, `${CONTRACT}.json`)

const args = process.argv.slice(2)
const unknown = args.filter((a) => a !== '--check')
if (unknown.length > 0) {
  console.error(`unknown arguments: ${unknown.join(' ')} (usage: compile.mjs [--check])`)
  process.exit(2)
}
const check = args.includes('--check')

const version = solc.version()
if (!version.startsWith(`${PINNED_SOLC}+`)) {
  console.error(`solc ${version} is installed, but ${PINNED_SOLC} is pinned: run \`npm ci --prefix tools/escrow-v2\``)
  process.exit(1)
}

const input = {
  language: 'Solidity',
  sources: { [SOURCE]: { content: readFileSync(join(here, SOURCE), 'utf8') } },
  settings: {
    evmVersion: 'cancun',
    optimizer: { enabled: true, runs: 200 },
    metadata: { appendCBOR: false, bytecodeHash: 'none' },
    outputSelection: { [SOURCE]: { [CONTRACT]: ['abi', 'evm.deployedBytecode.object'] } },
  },
}

// 2394: "transient storage can break composability". Intended here: the stand-in keeps the
// transaction's expiring nonce hash and the ids opened in it for the whole transaction, as
// the precompile does.
const EXPECTED_WARNINGS = new Set(['2394'])

const output = JSON.parse(solc.compile(JSON.stringify(input)))
let failed = false
for (const diagnostic of output.errors ?? []) {
  if (diagnostic.severity === 'warning' && EXPECTED_WARNINGS.has(diagnostic.errorCode)) continue
  const text = diagnostic.formattedMessage ?? diagnostic.message
  if (diagnostic.severity === 'error') {
    failed = true
    console.error(text)
  } else {
    console.warn(text)
  }
}
const compiled = output.contracts?.[SOURCE]?.[CONTRACT]
if (failed || !compiled) {
  console.error('compilation failed')
  process.exit(1)
}
const bytecode = compiled.evm.deployedBytecode.object
if (!/^[0-9a-f]+$/.test(bytecode)) {
  console.error('compilation produced no runtime bytecode')
  process.exit(1)
}

const artifact = `${JSON.stringify({ solc: version, abi: compiled.abi, deployedBytecode: `0x${bytecode}` }, null, 2)}\n`

if (check) {
  const committed = existsSync(ARTIFACT) ? readFileSync(ARTIFACT, 'utf8') : null
  if (committed !== artifact) {
    console.error(
      `${ARTIFACT} is ${committed === null ? 'missing' : 'stale'}: run \`node tools/escrow-v2/compile.mjs\` and commit the result`,
    )
    process.exit(1)
  }
  console.log(`${CONTRACT}.json is up to date (solc ${version}, ${bytecode.length / 2} bytes of runtime code)`)
} else {
  writeFileSync(ARTIFACT, artifact)
  console.log(`wrote ${CONTRACT}.json (solc ${version}, ${bytecode.length / 2} bytes of runtime code)`)
}
