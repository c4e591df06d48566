-- Wireshark/tshark dissector for ctsync's sync protocol v2 (ctsync/wire.py, docs/ctsync.md).
--
--   wireshark -X lua_script:docs/ctsync-dissector.lua sync.pcap
--   tshark -X lua_script:docs/ctsync-dissector.lua -r sync.pcap -V
--   (or copy it to ~/.local/lib/wireshark/plugins/)
--
-- Decodes UDP port 3780 (ctsync's default) and, heuristically, any UDP payload that
-- starts with "CTS1": the header (node, epoch, echo, seq, rseq, ack), the NACK ranges,
-- every message (type, length) and the message bodies: heartbeats, resync markers,
-- probes, destroys (the original tuple) and entries (the compact form of a commit
-- message: original tuple, status, timeout, NAT, TCP state, mark, helper). The
-- HMAC-SHA256 trailer is shown, not checked (the dissector has no key). A version 1
-- datagram (ctsync before the compact form) is flagged and its messages are not decoded.

local ctsync = Proto("ctsync", "ctsync conntrack sync protocol")

local MSG_TYPES = {
  [1] = "HEARTBEAT", [2] = "ENTRY", [3] = "DESTROY", [4] = "RESYNC_REQUEST",
  [5] = "RESYNC_BEGIN", [6] = "RESYNC_END", [7] = "PROBE",
}
local PROTOS = { [1] = "icmp", [6] = "tcp", [17] = "udp", [33] = "dccp", [47] = "gre",
                 [58] = "icmpv6", [132] = "sctp", [136] = "udplite" }
local TCP_STATES = { [0] = "NONE", [1] = "SYN_SENT", [2] = "SYN_RECV", [3] = "ESTABLISHED",
                     [4] = "FIN_WAIT", [5] = "CLOSE_WAIT", [6] = "LAST_ACK", [7] = "TIME_WAIT",
                     [8] = "CLOSE", [9] = "SYN_SENT2" }

local f = ctsync.fields
f.magic = ProtoField.string("ctsync.magic", "Magic")
f.version = ProtoField.uint8("ctsync.version", "Version")
f.flags = ProtoField.uint8("ctsync.flags", "Flags", base.HEX)
f.node = ProtoField.uint16("ctsync.node", "Node id")
f.epoch = ProtoField.uint64("ctsync.epoch", "Epoch")
f.echo = ProtoField.uint64("ctsync.echo", "Echoed peer epoch")
f.seq = ProtoField.uint64("ctsync.seq", "Datagram seq")
f.rseq = ProtoField.uint64("ctsync.rseq", "Reliable seq (0: none)")
f.ack = ProtoField.uint64("ctsync.ack", "Ack")
f.nack_count = ProtoField.uint16("ctsync.nack_count", "NACK ranges")
f.msg_count = ProtoField.uint16("ctsync.msg_count", "Messages")
f.nack_first = ProtoField.uint64("ctsync.nack.first", "NACK first")
f.nack_last = ProtoField.uint64("ctsync.nack.last", "NACK last")
f.msg_type = ProtoField.uint8("ctsync.msg.type", "Type", base.DEC, MSG_TYPES)
f.msg_len = ProtoField.uint16("ctsync.msg.len", "Length")
f.msg_body = ProtoField.bytes("ctsync.msg.body", "Body")
f.hb_role = ProtoField.uint8("ctsync.hb.role", "Role", base.DEC, { [0] = "backup", [1] = "master" })
f.hb_ready = ProtoField.uint8("ctsync.hb.ready", "Ready")
f.hb_cache = ProtoField.uint32("ctsync.hb.cache", "External cache entries")
f.resync_id = ProtoField.uint32("ctsync.resync.id", "Resync id")
f.resync_n = ProtoField.uint32("ctsync.resync.entries", "Entries sent")
f.probe = ProtoField.uint64("ctsync.probe.rseq", "Highest rseq sent")
f.text = ProtoField.string("ctsync.text", "Text")
f.ct_proto = ProtoField.uint8("ctsync.ct.proto", "L4 protocol", base.DEC, PROTOS)
f.ct_src = ProtoField.ipv4("ctsync.ct.src", "Source")
f.ct_dst = ProtoField.ipv4("ctsync.ct.dst", "Destination")
f.ct_src6 = ProtoField.ipv6("ctsync.ct.src6", "Source")
f.ct_dst6 = ProtoField.ipv6("ctsync.ct.dst6", "Destination")
f.ct_sport = ProtoField.uint16("ctsync.ct.sport", "Source port")
f.ct_dport = ProtoField.uint16("ctsync.ct.dport", "Destination port")
f.ct_icmp_id = ProtoField.uint16("ctsync.ct.icmp_id", "ICMP id")
f.ct_icmp_type = ProtoField.uint8("ctsync.ct.icmp_type", "ICMP type")
f.ct_zone = ProtoField.uint16("ctsync.ct.zone", "Zone")
f.ct_status = ProtoField.uint32("ctsync.ct.status", "Status", base.HEX)
f.ct_timeout = ProtoField.uint32("ctsync.ct.timeout", "Timeout (s)")
f.ct_mark = ProtoField.uint32("ctsync.ct.mark", "Mark", base.HEX)
f.ct_tcp_state = ProtoField.uint8("ctsync.ct.tcp_state", "TCP state", base.DEC, TCP_STATES)
f.ct_nat_ip = ProtoField.ipv4("ctsync.ct.nat_ip", "NAT address")
f.ct_nat_ip6 = ProtoField.ipv6("ctsync.ct.nat_ip6", "NAT address")
f.ct_nat_port = ProtoField.uint16("ctsync.ct.nat_port", "NAT port")
f.ct_flags = ProtoField.uint8("ctsync.ct.flags", "Entry flags (1 mark, 2 TCP, 4 window scales, 8 helper)", base.HEX)
f.ct_helper = ProtoField.string("ctsync.ct.helper", "Helper")
f.hmac = ProtoField.bytes("ctsync.hmac", "HMAC-SHA256")

local e_malformed = ProtoExpert.new("ctsync.malformed", "Malformed ctsync datagram",
                                    expert.group.MALFORMED, expert.severity.ERROR)
ctsync.experts = { e_malformed }

local HEADER_LEN = 52 -- magic 4, version, flags, node 2, epoch, echo, seq, rseq, ack (u64 each), 2 counts
local MAC_LEN = 32

local IPS_SRC_NAT, IPS_DST_NAT = 0x10, 0x20
local FLAG_MARK, FLAG_TCP, FLAG_WSCALE, FLAG_HELPER = 1, 2, 4, 8

-- The identity key at r(0): family u8, proto u8, zone u16, src, dst, then ports (or ICMP
-- id, type, code). Adds its fields to tree; returns "proto src:sport -> dst:dport" and the
-- address length, or nil when r is too short for the key its family says.
local function key(tree, r)
  if r:len() < 1 then return nil end
  local fam, n = r(0, 1):uint(), 4
  if fam == 10 then n = 16 elseif fam ~= 2 then return nil end
  if r:len() < 4 + 2 * n + 4 then return nil end
  tree:add(f.ct_proto, r(1, 1))
  tree:add(f.ct_zone, r(2, 2))
  local src, dst
  if n == 4 then
    tree:add(f.ct_src, r(4, 4)); tree:add(f.ct_dst, r(8, 4))
    src, dst = tostring(r(4, 4):ipv4()), tostring(r(8, 4):ipv4())
  else
    tree:add(f.ct_src6, r(4, 16)); tree:add(f.ct_dst6, r(20, 16))
    src, dst = "[" .. tostring(r(4, 16):ipv6()) .. "]", "[" .. tostring(r(20, 16):ipv6()) .. "]"
  end
  local proto, p = r(1, 1):uint(), 4 + 2 * n
  local name = PROTOS[proto] or tostring(proto)
  if proto == 1 or proto == 58 then
    tree:add(f.ct_icmp_id, r(p, 2)); tree:add(f.ct_icmp_type, r(p + 2, 1))
    return name .. " " .. src .. " -> " .. dst .. " id " .. r(p, 2):uint(), n
  end
  tree:add(f.ct_sport, r(p, 2)); tree:add(f.ct_dport, r(p + 2, 2))
  return name .. " " .. src .. ":" .. r(p, 2):uint() .. " -> " .. dst .. ":" .. r(p + 2, 2):uint(), n
end

-- An ENTRY body (version 2): the compact form of the entry's commit message
-- (ctnetlink/compact.py): key | status u32 | timeout u32 | flags u8 | [mark u32]
-- | [DNAT address, port] | [SNAT address, port] | [TCP state, flags orig, flags reply]
-- | [window scales] | [helper name]. Returns a one-line summary.
local function entry(tree, r)
  local kt = tree:add(ctsync, r, "Original tuple")
  local text, n = key(kt, r)
  if not text then
    tree:add_proto_expert_info(e_malformed, "entry shorter than its key")
    return "ENTRY (truncated)"
  end
  kt:append_text(": " .. text)
  local off = 4 + 2 * n + 4
  if r:len() < off + 9 then
    tree:add_proto_expert_info(e_malformed, "entry shorter than status, timeout and flags")
    return "ENTRY (truncated)"
  end
  local status, flags = r(off, 4):uint(), r(off + 8, 1):uint()
  tree:add(f.ct_status, r(off, 4)); tree:add(f.ct_timeout, r(off + 4, 4)); tree:add(f.ct_flags, r(off + 8, 1))
  off = off + 9
  local summary = "ENTRY " .. text
  local function need(k, what)
    if r:len() < off + k then
      tree:add_proto_expert_info(e_malformed, "entry truncated in " .. what)
      return false
    end
    return true
  end
  if bit.band(flags, FLAG_MARK) ~= 0 then
    if not need(4, "mark") then return summary end
    tree:add(f.ct_mark, r(off, 4)); off = off + 4
  end
  for _, nat in ipairs({ { IPS_DST_NAT, "Destination NAT" }, { IPS_SRC_NAT, "Source NAT" } }) do
    if bit.band(status, nat[1]) ~= 0 then
      if not need(n + 2, nat[2]) then return summary end
      local nt = tree:add(ctsync, r(off, n + 2), nat[2])
      local addr
      if n == 4 then nt:add(f.ct_nat_ip, r(off, 4)); addr = tostring(r(off, 4):ipv4())
      else nt:add(f.ct_nat_ip6, r(off, 16)); addr = "[" .. tostring(r(off, 16):ipv6()) .. "]" end
      nt:add(f.ct_nat_port, r(off + n, 2))
      nt:append_text(": " .. addr .. ":" .. r(off + n, 2):uint())
      summary = summary .. (nat[1] == IPS_SRC_NAT and " snat " or " dnat ") .. addr .. ":" .. r(off + n, 2):uint()
      off = off + n + 2
    end
  end
  if bit.band(flags, FLAG_TCP) ~= 0 then
    if not need(3, "TCP state") then return summary end
    tree:add(f.ct_tcp_state, r(off, 1))
    summary = summary .. " " .. (TCP_STATES[r(off, 1):uint()] or "?")
    off = off + 3
    if bit.band(flags, FLAG_WSCALE) ~= 0 then
      if not need(2, "window scales") then return summary end
      off = off + 2
    end
  end
  if bit.band(flags, FLAG_HELPER) ~= 0 and off < r:len() then
    tree:add(f.ct_helper, r(off)); off = r:len()
  end
  if off ~= r:len() then
    tree:add_proto_expert_info(e_malformed, (r:len() - off) .. " trailing bytes in the entry")
  end
  return summary
end

-- A DESTROY body: the identity key of the entry.
local function destroy(tree, r)
  local text, n = key(tree, r)
  if not text or r:len() ~= 4 + 2 * n + 4 then
    tree:add_proto_expert_info(e_malformed, "destroy key of unexpected length")
    return "DESTROY (bad length)"
  end
  return "DESTROY " .. text
end

local function message(tree, mtype, r)
  local n = r and r:len() or 0
  if mtype == 1 and n == 6 then
    tree:add(f.hb_role, r(0, 1)); tree:add(f.hb_ready, r(1, 1)); tree:add(f.hb_cache, r(2, 4))
    return "HEARTBEAT " .. (r(0, 1):uint() == 1 and "master" or "backup")
  elseif mtype == 2 and r then return entry(tree, r)
  elseif mtype == 3 and r then return destroy(tree, r)
  elseif mtype == 4 then
    if r then tree:add(f.text, r) end
    return "RESYNC_REQUEST"
  elseif mtype == 5 and n == 4 then tree:add(f.resync_id, r); return "RESYNC_BEGIN"
  elseif mtype == 6 and n == 8 then
    tree:add(f.resync_id, r(0, 4)); tree:add(f.resync_n, r(4, 4)); return "RESYNC_END"
  elseif mtype == 7 and n == 8 then tree:add(f.probe, r); return "PROBE"
  end
  if r then tree:add(f.msg_body, r) end
  return MSG_TYPES[mtype] or ("type " .. mtype)
end

function ctsync.dissector(tvb, pinfo, root)
  local len = tvb:len()
  if len < 4 or tvb(0, 4):string() ~= "CTS1" then return 0 end
  pinfo.cols.protocol = "CTSYNC"
  local tree = root:add(ctsync, tvb())
  if len < HEADER_LEN + MAC_LEN then
    tree:add_proto_expert_info(e_malformed, "shorter than header and HMAC")
    pinfo.cols.info = "ctsync (truncated)"
    return len
  end
  tree:add(f.magic, tvb(0, 4)); tree:add(f.version, tvb(4, 1)); tree:add(f.flags, tvb(5, 1))
  tree:add(f.node, tvb(6, 2)); tree:add(f.epoch, tvb(8, 8)); tree:add(f.echo, tvb(16, 8))
  tree:add(f.seq, tvb(24, 8)); tree:add(f.rseq, tvb(32, 8)); tree:add(f.ack, tvb(40, 8))
  tree:add(f.nack_count, tvb(48, 2)); tree:add(f.msg_count, tvb(50, 2))
  local version = tvb(4, 1):uint()
  if version ~= 2 then
    tree:add_proto_expert_info(e_malformed, "protocol version " .. version .. ", this dissector reads 2")
    pinfo.cols.info = "ctsync version " .. version .. " (not decoded)"
    return len
  end
  local n_nack, n_msg = tvb(48, 2):uint(), tvb(50, 2):uint()
  local body_end = len - MAC_LEN
  local off = HEADER_LEN
  local info = {}
  for i = 1, n_nack do
    if off + 16 > body_end then
      tree:add_proto_expert_info(e_malformed, "truncated NACK ranges"); break
    end
    local nt = tree:add(ctsync, tvb(off, 16), "NACK range")
    nt:add(f.nack_first, tvb(off, 8)); nt:add(f.nack_last, tvb(off + 8, 8))
    info[#info + 1] = "NACK " .. tvb(off, 8):uint64() .. "-" .. tvb(off + 8, 8):uint64()
    off = off + 16
  end
  local counts = {}
  for i = 1, n_msg do
    if off + 3 > body_end then
      tree:add_proto_expert_info(e_malformed, "truncated message header"); break
    end
    local mtype, mlen = tvb(off, 1):uint(), tvb(off + 1, 2):uint()
    if off + 3 + mlen > body_end then
      tree:add_proto_expert_info(e_malformed, "truncated message body"); break
    end
    local mt = tree:add(ctsync, tvb(off, 3 + mlen), "Message " .. i .. ": " .. (MSG_TYPES[mtype] or mtype))
    mt:add(f.msg_type, tvb(off, 1)); mt:add(f.msg_len, tvb(off + 1, 2))
    local body = nil
    if mlen > 0 then body = tvb(off + 3, mlen) end
    local text = message(mt, mtype, body)
    mt:set_text("Message " .. i .. ": " .. text)
    local name = MSG_TYPES[mtype] or ("type " .. mtype)
    counts[name] = (counts[name] or 0) + 1
    off = off + 3 + mlen
  end
  if off < body_end and n_msg > 0 then
    tree:add_proto_expert_info(e_malformed, (body_end - off) .. " trailing bytes")
  end
  tree:add(f.hmac, tvb(body_end, MAC_LEN))
  for name, c in pairs(counts) do info[#info + 1] = (c > 1 and (c .. " x ") or "") .. name end
  if #info == 0 then info[1] = "ACK" end
  pinfo.cols.info = string.format("node %d seq %s rseq %s ack %s: %s", tvb(6, 2):uint(),
    tostring(tvb(24, 8):uint64()), tostring(tvb(32, 8):uint64()), tostring(tvb(40, 8):uint64()),
    table.concat(info, ", "))
  return len
end

DissectorTable.get("udp.port"):add(3780, ctsync)

local function heuristic(tvb, pinfo, root)
  if tvb:len() < 4 or tvb(0, 4):string() ~= "CTS1" then return false end
  ctsync.dissector(tvb, pinfo, root)
  return true
end
ctsync:register_heuristic("udp", heuristic)
