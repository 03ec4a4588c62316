// Pays an MPP-protected URL with the official TypeScript SDK (mppx), on a local Tempo node.
//
//   node tools/devnet/interop/mppx-pay.mjs <url> [pull|push]
//
// Env: TEMPO_RPC_URL (required), PAYER_KEY (default: dev account 7), CHAIN_ID (default 31337).
// Prints one JSON line: {status, receipt, body}; exits 0 only on a 2xx with a receipt.
import { Mppx, tempo } from 'mppx/client'
import { createClient, defineChain, http } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { tempoLocalnet } from 'viem/chains'

const [url, mode = 'pull'] = process.argv.slice(2)
const rpc = process.env.TEMPO_RPC_URL
if (!url || !rpc) {
  console.error('usage: TEMPO_RPC_URL=... node mppx-pay.mjs <url> [pull|push]')
  process.exit(2)
}
const key =
  process.env.PAYER_KEY ?? '0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356'
const chain = defineChain({
  ...tempoLocalnet,
  id: Number(process.env.CHAIN_ID ?? 31337),
  rpcUrls: { default: { http: [rpc] } },
})
const getClient = () => createClient({ chain, transport: http(rpc) })
const mppx = Mppx.create({
  methods: [tempo({ account: privateKeyToAccount(key), getClient, mode })],
  polyfill: false,
})
const response = await mppx.fetch(url)
const header = response.headers.get('payment-receipt')
const receipt = header ? JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) : null
const body = await response.text()
console.log(JSON.stringify({ status: response.status, receipt, body }))
process.exit(response.ok && receipt ? 0 : 1)
