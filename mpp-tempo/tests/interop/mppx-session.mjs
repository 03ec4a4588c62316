// Session interop peer for `tests/session_vectors.rs`: runs the mppx 0.11.0 session code
// (client signing and the server's own checks) on jobs read from stdin, one JSON array in,
// one JSON array of results out. Offline: no RPC is ever made (local accounts sign locally).
//
// Usage: node mppx-session.mjs <dir holding node_modules/mppx> < jobs.json
// The mppx modules are imported by file path (the package's `exports` hide them), so the
// script can live outside the npm project.

import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

const root = process.argv[2]
if (!root) throw new Error('usage: node mppx-session.mjs <tools/devnet dir> < jobs.json')
const load = (path) => import(pathToFileURL(join(root, 'node_modules', path)).href)

const viem = await load('viem/_esm/index.js')
const { privateKeyToAccount } = await load('viem/_esm/accounts/index.js')
const dist = 'mppx/dist/tempo'
const ChannelOps = await load(`${dist}/session/client/ChannelOps.js`)
const Channel = await load(`${dist}/session/precompile/Channel.js`)
const Voucher = await load(`${dist}/session/precompile/Voucher.js`)
const Protocol = await load(`${dist}/session/precompile/Protocol.js`)
const Chain = await load(`${dist}/session/precompile/Chain.js`)
const Verification = await load(`${dist}/session/server/CredentialVerification.js`)
const Transports = await load(`${dist}/session/client/Transports.js`)
const Methods = await load(`${dist}/Methods.js`)
const LegacyOps = await load(`${dist}/legacy/client/ChannelOps.js`)
const LegacyChannel = await load(`${dist}/legacy/session/Channel.js`)
const LegacyVoucher = await load(`${dist}/legacy/session/Voucher.js`)

// A client that never talks to a node: local accounts sign typed data themselves.
const clientFor = (account, chainId) =>
  viem.createClient({
    account,
    chain: viem.defineChain({
      id: chainId,
      name: 'offline',
      nativeCurrency: { name: 'USD', symbol: 'USD', decimals: 18 },
      rpcUrls: { default: { http: ['http://127.0.0.1:9'] } },
    }),
    transport: viem.http('http://127.0.0.1:9'),
  })

async function run(job) {
  switch (job.op) {
    case 'v2Voucher':
    case 'v2Close': {
      const account = privateKeyToAccount(job.key)
      const create = job.op === 'v2Voucher' ? ChannelOps.createVoucherPayload : ChannelOps.createClosePayload
      const payload = await create(
        clientFor(account, job.chainId), account, job.descriptor, BigInt(job.amount), job.chainId, job.escrow)
      const channelId = Channel.computeId({ ...job.descriptor, chainId: job.chainId, escrow: job.escrow })
      return { payload, channelId, source: `did:pkh:eip155:${job.chainId}:${account.address}` }
    }
    case 'v2Verify':
      return {
        valid: await Voucher.verifyVoucher(job.escrow, job.chainId,
          { channelId: job.channelId, cumulativeAmount: BigInt(job.amount), signature: job.signature }, job.signer),
      }
    case 'v1Voucher': {
      const account = privateKeyToAccount(job.key)
      const payload = await LegacyOps.createVoucherPayload(
        clientFor(account, job.chainId), account, job.channelId, BigInt(job.amount), job.escrow, job.chainId)
      return { payload }
    }
    case 'v1Verify':
      return {
        valid: await LegacyVoucher.verifyVoucher(job.escrow, job.chainId,
          { channelId: job.channelId, cumulativeAmount: BigInt(job.amount), signature: job.signature }, job.signer),
      }
    case 'v1ChannelId':
      return { channelId: LegacyChannel.computeId({ ...job.params, chainId: job.chainId, escrowContract: job.escrow }) }
    case 'serverPayload': {
      // The server's own readers: the zod schema of the credential, then the field checks.
      try {
        Methods.session.schema.credential.payload.parse(job.payload)
        const parsed = Verification.requireSessionCredentialPayload(job.payload)
        if (job.check) {
          const c = job.check
          Verification.validateChannelDescriptor(parsed.descriptor, parsed.channelId, c.chainId, c.escrow,
            c.recipient, c.currency, c.operator)
        }
        return { ok: true, action: parsed.action }
      } catch (e) {
        return { ok: false, error: String(e?.message ?? e) }
      }
    }
    case 'openTx': {
      // The server's offline validation of an open transaction: decode, one call to the
      // escrow, the open arguments, the payer, the expiringNonceHash and the channel id.
      try {
        const { descriptor, expiringNonceHash, openDeposit } = Chain.validateOpenCredentialTransaction({
          serializedTransaction: job.transaction,
          escrowContract: job.escrow,
          feePayer: job.sponsored ? true : undefined,
          chainId: job.chainId,
          expectedPayee: job.descriptor.payee,
          expectedCurrency: job.descriptor.token,
          expectedOperator: job.descriptor.operator,
          expectedAuthorizedSigner: job.descriptor.authorizedSigner,
          expectedExpiringNonceHash: job.descriptor.expiringNonceHash,
          expectedChannelId: job.channelId,
          expectedPayer: job.descriptor.payer,
        })
        return { ok: true, descriptor, expiringNonceHash, deposit: openDeposit.toString() }
      } catch (e) {
        return { ok: false, error: String(e?.message ?? e) }
      }
    }
    case 'receipt':
      try {
        return { ok: true, receipt: Protocol.deserializeSessionReceipt(job.header) }
      } catch (e) {
        return { ok: false, error: String(e?.message ?? e) }
      }
    case 'challenge': {
      const challenge = { id: 'x', realm: 'r', method: 'tempo', intent: 'session', request: job.request }
      let escrow
      try { escrow = ChannelOps.resolveEscrow(challenge) } catch (e) { escrow = `error: ${e.message}` }
      return { v2: Transports.isTip1034SessionChallenge(challenge), escrow }
    }
    default:
      throw new Error(`unknown op ${job.op}`)
  }
}

const jobs = JSON.parse(readFileSync(0, 'utf8'))
const results = []
for (const job of jobs) results.push(await run(job))
process.stdout.write(JSON.stringify(results))
