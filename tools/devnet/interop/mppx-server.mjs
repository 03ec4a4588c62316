// An MPP server built with the official TypeScript SDK (mppx): `GET /paid` costs 0.01 pathUSD.
//
//   node tools/devnet/interop/mppx-server.mjs
//
// Env: TEMPO_RPC_URL (required), RECIPIENT (default: dev account 2), PORT (default: any free
// loopback port), CHAIN_ID (default 31337). Prints `listening <url>` once ready.
import http from 'node:http'
import { Mppx, Request as MppxRequest, NodeListener, tempo } from 'mppx/server'
import { createClient, defineChain, http as viemHttp } from 'viem'
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
const getClient = () => createClient({ chain, transport: viemHttp(rpc) })
const server = Mppx.create({
  methods: [
    tempo.charge({
      getClient,
      currency: '0x20c0000000000000000000000000000000000000',
      recipient: process.env.RECIPIENT ?? '0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC',
    }),
  ],
  secretKey: 'mppx-interop-secret-0123456789abcdef0123',
  realm: '127.0.0.1',
})

const listener = http.createServer(async (req, res) => {
  const request = MppxRequest.fromNodeListener(req, res)
  if (new URL(request.url).pathname !== '/paid') {
    res.writeHead(404).end()
    return
  }
  const result = await server.charge({ amount: '0.01' })(request)
  const response =
    result.status === 402 ? result.challenge : result.withReceipt(Response.json({ paid: true }))
  await NodeListener.sendResponse(res, response)
})
listener.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  console.log(`listening http://127.0.0.1:${listener.address().port}`)
})
