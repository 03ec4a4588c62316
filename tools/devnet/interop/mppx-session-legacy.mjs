// Pays an MPP session server (v1 escrow) with the official TypeScript SDK's legacy session
// client (mppx 0.11.0 `tempo.sessionLegacy`), on a local Tempo node: opens a channel on a
// per-request route, pays a few more requests, consumes a metered SSE stream (answering its
// `payment-need-voucher` events with voucher POSTs), then closes the channel.
//
//   node tools/devnet/interop/mppx-session-legacy.mjs <request-url> <stream-url> [requests]
//
// Env: TEMPO_RPC_URL (required), ESCROW (required: the v1 escrow the client pins),
// PAYER_KEY (default: dev account 4), CHAIN_ID (default 31337), MAX_DEPOSIT (human units,
// default "1"; the deposit is the smaller of it and the server's suggestedDeposit).
//
// Prints one JSON line: {channelId, requests:[{status, receipt, body}], stream:{ms, messages,
// finalReceipt, cumulative}, close:{receipt}, sseEvents:{<event name>: count}, exchanges:
// [{method, url, accept, action, cumulativeAmount, status, ms, receipt}], error?}. `exchanges` is every HTTP
// request the client made (through the `fetch` it was given), so the caller can count the
// 402s, the voucher POSTs and their answers. Exits 0 only when every step succeeded.
import { tempo } from 'mppx/client'
import { createClient, custom, defineChain, http } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { tempoLocalnet } from 'viem/chains'

const [requestUrl, streamUrl, requestsArg = '4'] = process.argv.slice(2)
const rpc = process.env.TEMPO_RPC_URL
const escrow = process.env.ESCROW
if (!requestUrl || !streamUrl || !rpc || !escrow) {
  console.error(
    'usage: TEMPO_RPC_URL=... ESCROW=0x... node mppx-session-legacy.mjs <request-url> <stream-url> [requests]',
  )
  process.exit(2)
}
const requests = Number(requestsArg)
const key =
  process.env.PAYER_KEY ?? '0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a'
const chain = defineChain({
  ...tempoLocalnet,
  id: Number(process.env.CHAIN_ID ?? 31337),
  rpcUrls: { default: { http: [rpc] } },
})

// anvil 1.7.1 fills a 0x76 batch's gas from its last call only (~784k), while approve + open
// needs ~1.57M: raise the filled gas, or the open runs out of gas (devnet.md §6.1).
const OPEN_GAS = '0x2dc6c0' // 3,000,000
const payerTransport = () => {
  const base = http(rpc)({ chain })
  return custom({
    async request(args) {
      const result = await base.request(args)
      if (args.method === 'eth_fillTransaction' && result?.tx) result.tx.gas = OPEN_GAS
      return result
    },
  })
}
const account = privateKeyToAccount(key)
const client = createClient({ account, chain, transport: payerTransport() })

// Every request the client makes goes through this fetch: it records the exchange, and counts
// the events of SSE bodies as they pass (the client hides `payment-need-voucher` events).
const exchanges = []
const sseEvents = {}
function credentialOf(headers) {
  const auth = new Headers(headers ?? {}).get('authorization')
  if (!auth?.startsWith('Payment ')) return null
  try {
    return JSON.parse(Buffer.from(auth.slice('Payment '.length).trim(), 'base64url').toString('utf8'))
  } catch {
    return null
  }
}
function countEvents(body) {
  const decoder = new TextDecoder()
  let buffer = ''
  return body.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        buffer += decoder.decode(chunk, { stream: true })
        const parts = buffer.split('\n\n')
        buffer = parts.pop()
        for (const part of parts) {
          const name = part.split('\n').find((l) => l.startsWith('event:'))?.slice(6).trim()
          const label = name ?? (part.startsWith(':') ? 'comment' : 'message')
          sseEvents[label] = (sseEvents[label] ?? 0) + 1
        }
        controller.enqueue(chunk)
      },
    }),
  )
}
async function recordingFetch(input, init) {
  const headers = new Headers(init?.headers ?? {})
  const credential = credentialOf(init?.headers)
  const exchange = {
    method: init?.method ?? 'GET',
    url: String(input),
    accept: headers.get('accept'),
    action: credential?.payload?.action ?? null,
    cumulativeAmount: credential?.payload?.cumulativeAmount ?? null,
  }
  const started = Date.now()
  const response = await globalThis.fetch(input, init)
  exchange.status = response.status
  exchange.ms = Date.now() - started
  const receipt = response.headers.get('payment-receipt')
  if (receipt) exchange.receipt = JSON.parse(Buffer.from(receipt, 'base64url').toString('utf8'))
  exchanges.push(exchange)
  if (response.body && response.headers.get('content-type')?.startsWith('text/event-stream')) {
    return new Response(countEvents(response.body), {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    })
  }
  return response
}

const session = tempo.sessionLegacy({
  account,
  client,
  escrowContract: escrow,
  maxDeposit: process.env.MAX_DEPOSIT ?? '1',
  fetch: recordingFetch,
})

const summary = { requests: [], exchanges, sseEvents }
let ok = true
try {
  for (let i = 0; i < requests; i++) {
    const response = await session.fetch(requestUrl)
    const body = await response.text()
    summary.requests.push({ status: response.status, receipt: response.receipt, body })
    ok &&= response.ok && !!response.receipt
  }
  summary.channelId = session.channelId

  const messages = []
  let finalReceipt = null
  const started = Date.now()
  const stream = await session.sse(streamUrl, {
    onReceipt: (receipt) => {
      finalReceipt = receipt
    },
  })
  for await (const data of stream) messages.push(data)
  summary.stream = {
    ms: Date.now() - started,
    messages,
    finalReceipt,
    cumulative: session.cumulative.toString(),
  }
  ok &&= finalReceipt !== null

  const closeReceipt = await session.close()
  summary.close = { receipt: closeReceipt ?? null }
  ok &&= !!closeReceipt?.txHash
} catch (e) {
  ok = false
  summary.error = String(e?.stack ?? e)
}
console.log(JSON.stringify(summary))
process.exit(ok ? 0 : 1)
