// An MCP server on the official TypeScript MCP SDK whose `search` tool charges 0.01 pathUSD
// through mppx's `Transport.mcpSdk()`, served over stdio (stdout is the MCP channel).
//
//   node tools/devnet/interop/mcp-server.mjs
//
// Env: TEMPO_RPC_URL (required), RECIPIENT (default: dev account 2), CHAIN_ID (default 31337).
//
// The low-level `Server` is used on purpose: `McpServer.registerTool` (SDK 1.32.2) turns an
// error thrown by a tool into an `isError` result, so mppx's `-32042` would never reach the
// client as a JSON-RPC error; a request handler's thrown `McpError` does.
import { Server } from '@modelcontextprotocol/sdk/server/index.js'
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js'
import {
  CallToolRequestSchema,
  ErrorCode,
  ListToolsRequestSchema,
  McpError,
} from '@modelcontextprotocol/sdk/types.js'
import { Mppx, Transport, tempo } from 'mppx/server'
import { createClient, defineChain, http } from 'viem'
import { tempoLocalnet } from 'viem/chains'

const rpc = process.env.TEMPO_RPC_URL
if (!rpc) {
  console.error('TEMPO_RPC_URL is required')
  process.exit(2)
}
const chain = defineChain({
  ...tempoLocalnet,
  id: Number(process.env.CHAIN_ID ?? 31337),
  rpcUrls: { default: { http: [rpc] } },
})
const getClient = () => createClient({ chain, transport: http(rpc) })
const payment = Mppx.create({
  methods: [
    tempo.charge({
      getClient,
      currency: '0x20c0000000000000000000000000000000000000',
      recipient: process.env.RECIPIENT ?? '0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC',
    }),
  ],
  secretKey: 'mppx-mcp-interop-secret-0123456789abcdef',
  realm: 'mcp.example.com',
  transport: Transport.mcpSdk(),
})

const server = new Server(
  { name: 'mppx-mcp-interop', version: '1.0.0' },
  { capabilities: { tools: {} } },
)
server.setRequestHandler(ListToolsRequestSchema, async () => ({
  tools: [
    {
      name: 'search',
      description: 'Searches (0.01 pathUSD a call)',
      inputSchema: { type: 'object', properties: { query: { type: 'string' } } },
    },
  ],
}))
server.setRequestHandler(CallToolRequestSchema, async (request, extra) => {
  if (request.params.name !== 'search') {
    throw new McpError(ErrorCode.InvalidParams, `unknown tool ${request.params.name}`)
  }
  const result = await payment.charge({ amount: '0.01', description: 'One search' })(extra)
  if (result.status === 402) throw result.challenge
  const query = request.params.arguments?.query ?? ''
  return result.withReceipt({ content: [{ type: 'text', text: `results for ${query}` }] })
})
await server.connect(new StdioServerTransport())
console.error('mcp-server: serving on stdio')
