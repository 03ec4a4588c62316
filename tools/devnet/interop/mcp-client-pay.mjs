// Calls a tool of an MCP server over streamable HTTP with the official TypeScript MCP SDK
// client, made payment-aware by mppx's `McpClient.wrap` (pays `-32042` with Tempo), on a
// local Tempo node.
//
//   node tools/devnet/interop/mcp-client-pay.mjs <mcp-url> <tool> [arguments-json]
//
// Env: TEMPO_RPC_URL (required), PAYER_KEY (default: dev account 7), CHAIN_ID (default 31337).
// Prints one JSON line: {capabilities, result, receipt} (or {error}); exits 0 only for a
// result that is not a tool error and carries a receipt.
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { tempo } from 'mppx/client'
import { McpClient } from 'mppx/mcp/client'
import { createClient, defineChain, http } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { tempoLocalnet } from 'viem/chains'

const [url, tool, args = '{}'] = process.argv.slice(2)
const rpc = process.env.TEMPO_RPC_URL
if (!url || !tool || !rpc) {
  console.error('usage: TEMPO_RPC_URL=... node mcp-client-pay.mjs <mcp-url> <tool> [arguments-json]')
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

const client = new Client({ name: 'mppx-mcp-interop', version: '1.0.0' })
await client.connect(new StreamableHTTPClientTransport(new URL(url)))
McpClient.wrap(client, { methods: tempo({ account: privateKeyToAccount(key), getClient }) })
let ok = false
try {
  const result = await client.callTool({ name: tool, arguments: JSON.parse(args) })
  const receipt = result.receipt ?? null
  console.log(JSON.stringify({ capabilities: client.getServerCapabilities(), result, receipt }))
  ok = !result.isError && receipt !== null
} catch (error) {
  console.log(JSON.stringify({ error: { code: error.code, message: error.message, data: error.data } }))
}
await client.close()
process.exit(ok ? 0 : 1)
