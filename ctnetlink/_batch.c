/*
 * ctnetlink._batch: the per-entry hot path of ctsync in C (CPython C API).
 *
 * The same functions as ctnetlink/batch_python.py, which is the reference: for every input,
 * valid or not, both return the same records, counters and CodecError reasons (the
 * differential tests in tests/ctsync/test_batch_codec.py check it). When the two disagree,
 * the Python codec (decode.py, encode.py, key.py) is right.
 *
 *   events(buf, filt=None, skip_portids=None)
 *       -> (records, skipped, filtered, errors, other)    see batch_python.events
 *   recv_events(sock, max_datagrams, filt, skip_portids)  see batch_python.recv_events
 *   expand(body) -> (key, timeout, message)              see compact.expand
 *   key_and_timeout(msg) -> (key, timeout)                see decode.key_and_timeout
 *   Filter(ignore_protocols=(), ignore_tcp_states=(), ignore_addresses=())
 *
 * Wire facts (include/uapi/linux/netlink.h, netfilter/nfnetlink*.h): netlink and attribute
 * headers are host order; ctnetlink integer payloads wider than a byte are big-endian;
 * attributes are 4-aligned; nests carry NLA_F_NESTED, which is masked off (and not
 * required) when reading. Every read below is bounds-checked against the end of the
 * enclosing message or attribute first; nothing is read through a cast pointer (memcpy).
 *
 * events() records carry the compact form of each entry's commit message (ctnetlink/compact.py:
 * what the sync link carries); expand() turns one back into (key, timeout, commit message).
 *
 * Why one file over 600 lines: it mirrors five Python modules (decode, encode, compact, key and
 * the filter) that must stay in step with each other and with the reference; most of its length
 * is the attribute-by-attribute layout, kept next to the comments that say where it comes from.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE  /* recvmmsg */
#include <Python.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

/* Bumped when the functions' shapes change: ctnetlink/batch.py refuses a stale build. */
#define API_VERSION 4

/* ---- ABI numbers (ctnetlink/constants.py) --------------------------------------------- */
#define AF_INET_ 2
#define AF_INET6_ 10
#define CT_NEW 0x100
#define CT_DELETE 0x102
#define NLM_F_REQUEST 0x01
#define NLM_F_EXCL 0x200
#define NLM_F_CREATE 0x400
#define NLA_F_NESTED 0x8000
#define TYPE_MASK 0x3FFF /* ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) */

enum { CTA_TUPLE_ORIG = 1, CTA_TUPLE_REPLY, CTA_STATUS, CTA_PROTOINFO, CTA_HELP, CTA_NAT_SRC,
       CTA_TIMEOUT, CTA_MARK, CTA_ID = 12, CTA_NAT_DST = 13, CTA_ZONE = 18 };
enum { CTA_TUPLE_IP = 1, CTA_TUPLE_PROTO = 2 };
enum { CTA_IP_V4_SRC = 1, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST };
enum { CTA_PROTO_NUM = 1, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT, CTA_PROTO_ICMP_ID,
       CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE, CTA_PROTO_ICMPV6_ID, CTA_PROTO_ICMPV6_TYPE,
       CTA_PROTO_ICMPV6_CODE };
enum { CTA_PROTOINFO_TCP = 1 };
enum { TCP_STATE = 1, TCP_WSCALE_ORIG, TCP_WSCALE_REPLY, TCP_FLAGS_ORIG, TCP_FLAGS_REPLY };
enum { CTA_NAT_V4_MINIP = 1, CTA_NAT_V4_MAXIP, CTA_NAT_PROTO, CTA_NAT_V6_MINIP, CTA_NAT_V6_MAXIP };
enum { CTA_PROTONAT_PORT_MIN = 1, CTA_PROTONAT_PORT_MAX };
enum { CTA_HELP_NAME = 1 };

#define IPS_EXPECTED (1u << 0)
#define IPS_CONFIRMED (1u << 3)
#define IPS_SRC_NAT (1u << 4)
#define IPS_DST_NAT (1u << 5)
#define IPS_DYING (1u << 9)
#define IPS_TEMPLATE (1u << 11)
#define IPS_UNTRACKED (1u << 12)
#define IPS_OFFLOAD (1u << 14)
#define IPS_HW_OFFLOAD (1u << 15)
/* encode.COMMIT_STATUS_STRIP and COMMIT_TCP_FLAGS_KEEP (WINDOW_SCALE|SACK_PERM|CLOSE_INIT) */
#define COMMIT_STATUS_STRIP (IPS_EXPECTED | IPS_DYING | IPS_OFFLOAD | IPS_HW_OFFLOAD | IPS_TEMPLATE | IPS_UNTRACKED)
#define COMMIT_TCP_FLAGS_KEEP 0x07
#define TCP_FLAG_BE_LIBERAL 0x08

#define IPPROTO_ICMP_ 1
#define IPPROTO_TCP_ 6
#define IPPROTO_ICMPV6_ 58

enum { KIND_NEW = 1, KIND_UPDATE = 2, KIND_DESTROY = 3 };

/* A CodecError reason, or NULL for success. */
typedef const char *reason_t;

/* ---- reading --------------------------------------------------------------------------- */

static inline uint16_t host16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t host32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* One attribute: type without flags, payload offset and full length (header included). */
typedef struct { unsigned type; Py_ssize_t p; Py_ssize_t len; } attr_t;

/* The attribute at *off in b[..end): 1 and *off advanced (4-aligned, possibly past end),
 * 0 when fewer than 4 bytes are left, -1 when its length is < 4 or runs past end
 * (decode._nested / parse_entry's loop: "bad_attr_len"). */
static int next_attr(const uint8_t *b, Py_ssize_t *off, Py_ssize_t end, attr_t *a)
{
    if (*off + 4 > end)
        return 0;
    Py_ssize_t len = host16(b + *off);
    if (len < 4 || *off + len > end)
        return -1;
    a->type = host16(b + *off + 2) & TYPE_MASK;
    a->p = *off + 4;
    a->len = len;
    *off += (len + 3) & ~(Py_ssize_t)3;
    return 1;
}

/* ---- decoding (decode.parse_entry and friends) ---------------------------------------- */

typedef struct {
    int family;                 /* AF_INET_ / AF_INET6_ */
    unsigned proto;
    uint8_t src[16], dst[16];   /* 4 or 16 bytes used, by family */
    uint16_t sport, dport, icmp_id;
    uint8_t icmp_type, icmp_code;
} tuple_t;

typedef struct {
    int present;                /* the NAT attribute was there (even empty) */
    int addr_family;            /* 0: no MINIP */
    uint8_t addr[16];
    int has_port;
    uint16_t port;
} nat_t;

typedef struct {
    tuple_t orig, reply;
    uint32_t status, timeout, mark;
    uint16_t zone;
    uint8_t tcp[5];             /* state, flags orig, flags reply, wscale orig, wscale reply */
    uint8_t has_tcp[5];         /* 0: None in the Python Entry */
    const uint8_t *helper;      /* helper name up to its first NUL; NULL: None */
    Py_ssize_t helper_len;
} entry_t;

static inline int addr_len(int family) { return family == AF_INET_ ? 4 : 16; }
static inline int is_icmp(unsigned proto) { return proto == IPPROTO_ICMP_ || proto == IPPROTO_ICMPV6_; }

/* constants.PORT_PROTOS: TCP, UDP, DCCP, GRE, SCTP, UDP-Lite */
static inline int is_port_proto(unsigned proto)
{
    return proto == 6 || proto == 17 || proto == 33 || proto == 47 || proto == 132 || proto == 136;
}

/* CTA_TUPLE_ORIG / CTA_TUPLE_REPLY payload b[p..end) (decode._parse_tuple's generic walk;
 * its IPv4 fast path gives the same result). */
static reason_t parse_tuple(const uint8_t *b, Py_ssize_t p, Py_ssize_t end, tuple_t *t)
{
    int have_src = 0, have_dst = 0, have_proto = 0, r;
    attr_t a, c;
    memset(t, 0, sizeof *t);
    while ((r = next_attr(b, &p, end, &a)) > 0) {
        Py_ssize_t q = a.p, qend = a.p - 4 + a.len;
        if (a.type == CTA_TUPLE_IP) {
            while ((r = next_attr(b, &q, qend, &c)) > 0) {
                int fam, is_src;
                switch (c.type) {
                case CTA_IP_V4_SRC: fam = AF_INET_; is_src = 1; break;
                case CTA_IP_V4_DST: fam = AF_INET_; is_src = 0; break;
                case CTA_IP_V6_SRC: fam = AF_INET6_; is_src = 1; break;
                case CTA_IP_V6_DST: fam = AF_INET6_; is_src = 0; break;
                default: continue;
                }
                if (c.len != 4 + addr_len(fam))
                    return "bad_attr_len";
                if (t->family && t->family != fam)
                    return "mixed_family";
                t->family = fam;
                memcpy(is_src ? t->src : t->dst, b + c.p, addr_len(fam));
                if (is_src)
                    have_src = 1;
                else
                    have_dst = 1;
            }
            if (r < 0)
                return "bad_attr_len";
        } else if (a.type == CTA_TUPLE_PROTO) {
            while ((r = next_attr(b, &q, qend, &c)) > 0) {
                switch (c.type) {
                case CTA_PROTO_NUM:
                    if (c.len < 5) return "bad_attr_len";
                    t->proto = b[c.p];
                    have_proto = 1;
                    break;
                case CTA_PROTO_SRC_PORT:
                    if (c.len < 6) return "bad_attr_len";
                    t->sport = be16(b + c.p);
                    break;
                case CTA_PROTO_DST_PORT:
                    if (c.len < 6) return "bad_attr_len";
                    t->dport = be16(b + c.p);
                    break;
                case CTA_PROTO_ICMP_ID: case CTA_PROTO_ICMPV6_ID:  /* either, for any protocol */
                    if (c.len < 6) return "bad_attr_len";
                    t->icmp_id = be16(b + c.p);
                    break;
                case CTA_PROTO_ICMP_TYPE: case CTA_PROTO_ICMPV6_TYPE:
                    if (c.len < 5) return "bad_attr_len";
                    t->icmp_type = b[c.p];
                    break;
                case CTA_PROTO_ICMP_CODE: case CTA_PROTO_ICMPV6_CODE:
                    if (c.len < 5) return "bad_attr_len";
                    t->icmp_code = b[c.p];
                    break;
                }
            }
            if (r < 0)
                return "bad_attr_len";
        }
    }
    if (r < 0)
        return "bad_attr_len";
    if (!have_src || !have_dst || !have_proto)
        return "incomplete_tuple";
    return NULL;
}

/* CTA_NAT_SRC / CTA_NAT_DST of a commit message (decode._parse_nat): the last MINIP and
 * the last PORT_MIN; MAXIP and PORT_MAX are not read. */
static reason_t parse_nat(const uint8_t *b, Py_ssize_t p, Py_ssize_t end, nat_t *nat)
{
    attr_t a, c;
    int r;
    memset(nat, 0, sizeof *nat);
    nat->present = 1;
    while ((r = next_attr(b, &p, end, &a)) > 0) {
        if (a.type == CTA_NAT_V4_MINIP || a.type == CTA_NAT_V6_MINIP) {
            int fam = a.type == CTA_NAT_V4_MINIP ? AF_INET_ : AF_INET6_;
            if (a.len != 4 + addr_len(fam))
                return "bad_attr_len";
            nat->addr_family = fam;
            memcpy(nat->addr, b + a.p, addr_len(fam));
        } else if (a.type == CTA_NAT_PROTO) {
            Py_ssize_t q = a.p, qend = a.p - 4 + a.len;
            while ((r = next_attr(b, &q, qend, &c)) > 0) {
                if (c.type == CTA_PROTONAT_PORT_MIN) {
                    if (c.len < 6)
                        return "bad_attr_len";
                    nat->port = be16(b + c.p);
                    nat->has_port = 1;
                }
            }
            if (r < 0)
                return "bad_attr_len";
        }
    }
    return r < 0 ? "bad_attr_len" : NULL;
}

/* CTA_PROTOINFO (decode._parse_protoinfo): each CTA_PROTOINFO resets all five values. */
static reason_t parse_protoinfo(const uint8_t *b, Py_ssize_t p, Py_ssize_t end, entry_t *e)
{
    /* attribute type -> slot in entry_t.tcp */
    static const int slot[6] = { -1, 0, 3, 4, 1, 2 };
    attr_t a, c;
    int r;
    memset(e->tcp, 0, sizeof e->tcp);  /* an absent flag byte counts as 0 when encoding */
    memset(e->has_tcp, 0, sizeof e->has_tcp);
    while ((r = next_attr(b, &p, end, &a)) > 0) {
        if (a.type != CTA_PROTOINFO_TCP)
            continue;
        Py_ssize_t q = a.p, qend = a.p - 4 + a.len;
        while ((r = next_attr(b, &q, qend, &c)) > 0) {
            if (c.type >= TCP_STATE && c.type <= TCP_FLAGS_REPLY) {
                if (c.len < 5)
                    return "bad_attr_len";
                e->tcp[slot[c.type]] = b[c.p];  /* flags: the byte of struct nf_ct_tcp_flags */
                e->has_tcp[slot[c.type]] = 1;
            }
        }
        if (r < 0)
            return "bad_attr_len";
    }
    return r < 0 ? "bad_attr_len" : NULL;
}

/* CTA_HELP (decode._parse_helper): the last CTA_HELP_NAME, up to its first NUL. */
static reason_t parse_helper(const uint8_t *b, Py_ssize_t p, Py_ssize_t end, entry_t *e)
{
    attr_t a;
    int r;
    e->helper = NULL;
    e->helper_len = 0;
    while ((r = next_attr(b, &p, end, &a)) > 0) {
        if (a.type == CTA_HELP_NAME) {
            const uint8_t *nul = memchr(b + a.p, 0, a.len - 4);
            e->helper = b + a.p;
            e->helper_len = nul ? nul - (b + a.p) : a.len - 4;
        }
    }
    return r < 0 ? "bad_attr_len" : NULL;
}

/* decode._apply_nat: the reply tuple the kernel will have once it applies the NAT
 * attributes of a commit message (DNAT rewrites the reply's source, SNAT its destination). */
static reason_t apply_nat(tuple_t *r, const nat_t *src, const nat_t *dst)
{
    int src_fam = r->family, dst_fam = r->family;
    int icmp = is_icmp(r->proto);
    if (dst->present) {
        if (dst->addr_family) {
            memcpy(r->src, dst->addr, 16);
            src_fam = dst->addr_family;
        }
        if (dst->has_port) {
            if (icmp) r->icmp_id = dst->port; else r->sport = dst->port;
        }
    }
    if (src->present) {
        if (src->addr_family) {
            memcpy(r->dst, src->addr, 16);
            dst_fam = src->addr_family;
        }
        if (src->has_port) {
            if (icmp) r->icmp_id = src->port; else r->dport = src->port;
        }
    }
    if (src_fam != r->family || dst_fam != r->family)
        return "mixed_family";
    return NULL;
}

/* decode.parse_entry: the attributes of a CT_NEW/CT_DELETE message; b[off..end) starts at
 * the nfgenmsg (4 bytes: family, version, res_id), right after the nlmsghdr. */
static reason_t parse_entry(const uint8_t *b, Py_ssize_t off, Py_ssize_t end, entry_t *e)
{
    nat_t nat_src = {0}, nat_dst = {0};
    int have_orig = 0, have_reply = 0, r;
    reason_t why;
    attr_t a;
    memset(e, 0, sizeof *e);
    if (off + 4 > end)
        return "truncated";
    off += 4;
    while ((r = next_attr(b, &off, end, &a)) > 0) {
        Py_ssize_t aend = a.p - 4 + a.len;
        switch (a.type) {
        case CTA_TUPLE_ORIG:
            if ((why = parse_tuple(b, a.p, aend, &e->orig))) return why;
            have_orig = 1;
            break;
        case CTA_TUPLE_REPLY:
            if ((why = parse_tuple(b, a.p, aend, &e->reply))) return why;
            have_reply = 1;
            break;
        case CTA_STATUS: case CTA_TIMEOUT: case CTA_MARK: case CTA_ID:
            if (a.len != 8) return "bad_attr_len";
            if (a.type == CTA_STATUS) e->status = be32(b + a.p);
            else if (a.type == CTA_TIMEOUT) e->timeout = be32(b + a.p);
            else if (a.type == CTA_MARK) e->mark = be32(b + a.p);
            break;  /* CTA_ID: checked, not kept (the commit form has no id) */
        case CTA_ZONE:
            if (a.len < 6) return "bad_attr_len";
            e->zone = be16(b + a.p);
            break;
        case CTA_PROTOINFO:
            if ((why = parse_protoinfo(b, a.p, aend, e))) return why;
            break;
        case CTA_NAT_SRC:
            if ((why = parse_nat(b, a.p, aend, &nat_src))) return why;
            break;
        case CTA_NAT_DST:
            if ((why = parse_nat(b, a.p, aend, &nat_dst))) return why;
            break;
        case CTA_HELP:
            if ((why = parse_helper(b, a.p, aend, e))) return why;
            break;
        }
    }
    if (r < 0)
        return "bad_attr_len";
    if (!have_orig)
        return "no_orig_tuple";
    if (!have_reply)
        return "no_reply_tuple";
    if (e->orig.family != e->reply.family)
        return "mixed_family";
    if (nat_src.present || nat_dst.present) {
        /* a commit message: the kernel's reply tuple will be the NATed one */
        if ((why = apply_nat(&e->reply, &nat_src, &nat_dst))) return why;
        if (nat_src.present) e->status |= IPS_SRC_NAT;
        if (nat_dst.present) e->status |= IPS_DST_NAT;
    }
    return NULL;
}

/* ---- the identity key (key.key_of) ------------------------------------------------------ */

/* family u8 | proto u8 | zone be16 | src | dst | ICMP: id be16, type u8, code u8 |
 * others: sport be16, dport be16 */
static PyObject *make_key(const tuple_t *t, uint16_t zone)
{
    uint8_t k[4 + 32 + 4], *w = k;
    int n = addr_len(t->family);
    *w++ = (uint8_t)t->family;
    *w++ = (uint8_t)t->proto;
    *w++ = zone >> 8; *w++ = zone & 0xFF;
    memcpy(w, t->src, n); w += n;
    memcpy(w, t->dst, n); w += n;
    if (is_icmp(t->proto)) {
        *w++ = t->icmp_id >> 8; *w++ = t->icmp_id & 0xFF;
        *w++ = t->icmp_type; *w++ = t->icmp_code;
    } else {
        *w++ = t->sport >> 8; *w++ = t->sport & 0xFF;
        *w++ = t->dport >> 8; *w++ = t->dport & 0xFF;
    }
    return PyBytes_FromStringAndSize((const char *)k, w - k);
}

/* ---- writing netlink attributes ----------------------------------------------------------- */

static uint8_t *put_nla(uint8_t *w, unsigned len, unsigned type)
{
    uint16_t l = (uint16_t)len, t = (uint16_t)type;
    memcpy(w, &l, 2);
    memcpy(w + 2, &t, 2);
    return w + 4;
}

static uint8_t *put_u8(uint8_t *w, unsigned type, uint8_t v)  /* 5 bytes + 3 padding */
{
    w = put_nla(w, 5, type);
    w[0] = v; w[1] = w[2] = w[3] = 0;
    return w + 4;
}

static uint8_t *put_be16(uint8_t *w, unsigned type, uint16_t v)  /* 6 bytes + 2 padding */
{
    w = put_nla(w, 6, type);
    w[0] = v >> 8; w[1] = v & 0xFF; w[2] = w[3] = 0;
    return w + 4;
}

static uint8_t *put_be32(uint8_t *w, unsigned type, uint32_t v)
{
    w = put_nla(w, 8, type);
    w[0] = v >> 24; w[1] = (v >> 16) & 0xFF; w[2] = (v >> 8) & 0xFF; w[3] = v & 0xFF;
    return w + 4;
}

static uint8_t *put_addr(uint8_t *w, unsigned type, const uint8_t *a, int n)
{
    w = put_nla(w, 4 + n, type);
    memcpy(w, a, n);
    return w + n;
}

/* encode._tuple_attr: IP{SRC, DST} PROTO{NUM, ports | ICMP id, type, code | nothing} */
static uint8_t *put_tuple(uint8_t *w, unsigned nest_type, const tuple_t *t)
{
    int n = addr_len(t->family), v6 = t->family == AF_INET6_;
    unsigned ip_len = 4 + 2 * (4 + n);
    unsigned pr_len = is_port_proto(t->proto) ? 28 : is_icmp(t->proto) ? 36 : 12;
    w = put_nla(w, 4 + ip_len + pr_len, NLA_F_NESTED | nest_type);
    w = put_nla(w, ip_len, NLA_F_NESTED | CTA_TUPLE_IP);
    w = put_addr(w, v6 ? CTA_IP_V6_SRC : CTA_IP_V4_SRC, t->src, n);
    w = put_addr(w, v6 ? CTA_IP_V6_DST : CTA_IP_V4_DST, t->dst, n);
    w = put_nla(w, pr_len, NLA_F_NESTED | CTA_TUPLE_PROTO);
    w = put_u8(w, CTA_PROTO_NUM, (uint8_t)t->proto);
    if (is_port_proto(t->proto)) {
        w = put_be16(w, CTA_PROTO_SRC_PORT, t->sport);
        w = put_be16(w, CTA_PROTO_DST_PORT, t->dport);
    } else if (is_icmp(t->proto)) {
        int v6attrs = t->proto == IPPROTO_ICMPV6_;  /* by protocol, not by family */
        w = put_be16(w, v6attrs ? CTA_PROTO_ICMPV6_ID : CTA_PROTO_ICMP_ID, t->icmp_id);
        w = put_u8(w, v6attrs ? CTA_PROTO_ICMPV6_TYPE : CTA_PROTO_ICMP_TYPE, t->icmp_type);
        w = put_u8(w, v6attrs ? CTA_PROTO_ICMPV6_CODE : CTA_PROTO_ICMP_CODE, t->icmp_code);
    }
    return w;
}

/* constants.ICMP_INVERSE / ICMPV6_INVERSE (nf_conntrack_proto_icmp*.c invmap) */
static uint8_t icmp_inverse_type(unsigned proto, uint8_t type)
{
    if (proto == IPPROTO_ICMP_) {
        switch (type) {
        case 8: return 0;   case 0: return 8;   case 13: return 14; case 14: return 13;
        case 15: return 16; case 16: return 15; case 17: return 18; case 18: return 17;
        }
    } else {
        switch (type) {
        case 128: return 129; case 129: return 128; case 139: return 140; case 140: return 139;
        }
    }
    return type;
}

/* model.Tuple.inverse (nf_ct_invert_tuple) */
static void invert(const tuple_t *t, tuple_t *inv)
{
    memset(inv, 0, sizeof *inv);
    inv->family = t->family;
    inv->proto = t->proto;
    memcpy(inv->src, t->dst, 16);
    memcpy(inv->dst, t->src, 16);
    if (is_icmp(t->proto)) {
        inv->icmp_id = t->icmp_id;
        inv->icmp_type = icmp_inverse_type(t->proto, t->icmp_type);
        inv->icmp_code = t->icmp_code;
    } else {
        inv->sport = t->dport;
        inv->dport = t->sport;
    }
}

/* encode._nat_attr: {MINIP = MAXIP = addr, PROTO{PORT_MIN = PORT_MAX = port}}; no PROTO
 * for protocols without ports. Which: the original tuple's family and protocol. */
static uint8_t *put_nat(uint8_t *w, unsigned nest_type, const tuple_t *o, const uint8_t *addr, uint16_t port)
{
    int n = addr_len(o->family), v6 = o->family == AF_INET6_;
    unsigned pair = 4 + 2 * (4 + n);
    int ports = is_port_proto(o->proto) || is_icmp(o->proto);
    w = put_nla(w, pair + (ports ? 20 : 0), NLA_F_NESTED | nest_type);
    w = put_addr(w, v6 ? CTA_NAT_V6_MINIP : CTA_NAT_V4_MINIP, addr, n);
    w = put_addr(w, v6 ? CTA_NAT_V6_MAXIP : CTA_NAT_V4_MAXIP, addr, n);
    if (ports) {
        w = put_nla(w, 20, NLA_F_NESTED | CTA_NAT_PROTO);
        w = put_be16(w, CTA_PROTONAT_PORT_MIN, port);
        w = put_be16(w, CTA_PROTONAT_PORT_MAX, port);
    }
    return w;
}

/* ---- the commit fields (encode.CommitFields) ------------------------------------------- */

/* What a commit message is made of, as it carries it (encode.commit_fields of an entry,
 * compact.unpack of a compact form). */
typedef struct {
    tuple_t orig;
    uint16_t zone;
    uint32_t status, timeout, mark;   /* as sent */
    int has_dnat, has_snat;
    uint8_t dnat_addr[16], snat_addr[16];
    uint16_t dnat_port, snat_port;
    int has_tcp, has_ws;
    uint8_t tcp_state, fo, fr, wo, wr; /* flags as sent: kept flags | BE_LIBERAL */
    const uint8_t *helper;            /* not NUL-terminated; helper_len 0: none */
    Py_ssize_t helper_len;
} commit_t;

/* compact.HELPER_MAX and the compact form's flags (ctnetlink/compact.py) */
#define HELPER_MAX 32
#define FLAG_MARK 1
#define FLAG_TCP 2
#define FLAG_WSCALE 4
#define FLAG_HELPER 8

/* encode.commit_fields: the commit recipe applied to a decoded entry. The helper name is
 * checked as compact.pack checks it (ASCII, at most HELPER_MAX bytes): "bad_entry". */
static reason_t commit_of(const entry_t *e, commit_t *c)
{
    const tuple_t *r = &e->reply;
    memset(c, 0, sizeof *c);
    c->orig = e->orig;
    c->zone = e->zone;
    c->status = (e->status & ~COMMIT_STATUS_STRIP) | IPS_CONFIRMED;
    c->timeout = e->timeout ? e->timeout : 1;
    c->mark = e->mark;
    if (e->status & IPS_DST_NAT) {  /* the reply's source is where the destination goes */
        c->has_dnat = 1;
        memcpy(c->dnat_addr, r->src, 16);
        c->dnat_port = is_icmp(r->proto) ? r->icmp_id : r->sport;
    }
    if (e->status & IPS_SRC_NAT) {  /* the reply's destination is where the source goes */
        c->has_snat = 1;
        memcpy(c->snat_addr, r->dst, 16);
        c->snat_port = is_icmp(r->proto) ? r->icmp_id : r->dport;
    }
    if (e->orig.proto == IPPROTO_TCP_ && e->has_tcp[0]) {
        c->has_tcp = 1;
        c->tcp_state = e->tcp[0];
        c->fo = (e->tcp[1] & COMMIT_TCP_FLAGS_KEEP) | TCP_FLAG_BE_LIBERAL;
        c->fr = (e->tcp[2] & COMMIT_TCP_FLAGS_KEEP) | TCP_FLAG_BE_LIBERAL;
        if (e->has_tcp[3] && e->has_tcp[4]) {  /* window scales only if both are known */
            c->has_ws = 1;
            c->wo = e->tcp[3];
            c->wr = e->tcp[4];
        }
    }
    if (e->helper && e->helper_len) {
        if (e->helper_len > HELPER_MAX)
            return "bad_entry";
        for (Py_ssize_t i = 0; i < e->helper_len; i++)
            if (e->helper[i] >= 0x80)  /* decoded as U+FFFD, which "ascii" cannot encode */
                return "bad_entry";
        c->helper = e->helper;
        c->helper_len = e->helper_len;
    }
    return NULL;
}

/* ---- the compact form (compact.pack / compact.unpack) ----------------------------------- */

static inline uint8_t *w16(uint8_t *w, uint16_t v) { w[0] = v >> 8; w[1] = v & 0xFF; return w + 2; }
static inline uint8_t *w32(uint8_t *w, uint32_t v)
{
    w[0] = v >> 24; w[1] = (v >> 16) & 0xFF; w[2] = (v >> 8) & 0xFF; w[3] = v & 0xFF;
    return w + 4;
}

/* key (40 max) + 9 + mark 4 + two NATs 2 * 18 + tcp 3 + wscale 2 + helper */
#define COMPACT_MAX (40 + 9 + 4 + 36 + 5 + HELPER_MAX)

static PyObject *make_compact(const commit_t *c)
{
    uint8_t buf[COMPACT_MAX], *w = buf;
    const tuple_t *t = &c->orig;
    int n = addr_len(t->family);
    /* the key: family u8 | proto u8 | zone be16 | src | dst | l4 (make_key) */
    *w++ = (uint8_t)t->family;
    *w++ = (uint8_t)t->proto;
    w = w16(w, c->zone);
    memcpy(w, t->src, n); w += n;
    memcpy(w, t->dst, n); w += n;
    if (is_icmp(t->proto)) {
        w = w16(w, t->icmp_id);
        *w++ = t->icmp_type; *w++ = t->icmp_code;
    } else {
        w = w16(w, t->sport);
        w = w16(w, t->dport);
    }
    w = w32(w, c->status);
    w = w32(w, c->timeout);
    *w++ = (c->mark ? FLAG_MARK : 0) | (c->has_tcp ? FLAG_TCP : 0) | (c->has_tcp && c->has_ws ? FLAG_WSCALE : 0)
           | (c->helper_len ? FLAG_HELPER : 0);
    if (c->mark)
        w = w32(w, c->mark);
    if (c->has_dnat) {
        memcpy(w, c->dnat_addr, n); w += n;
        w = w16(w, c->dnat_port);
    }
    if (c->has_snat) {
        memcpy(w, c->snat_addr, n); w += n;
        w = w16(w, c->snat_port);
    }
    if (c->has_tcp) {
        *w++ = c->tcp_state; *w++ = c->fo; *w++ = c->fr;
        if (c->has_ws) {
            *w++ = c->wo; *w++ = c->wr;
        }
    }
    memcpy(w, c->helper, c->helper_len);  /* at most HELPER_MAX (commit_of) */
    w += c->helper_len;
    return PyBytes_FromStringAndSize((const char *)buf, w - buf);
}

/* compact.unpack: b[0..n) into c (c->helper points into b); the key's length in *klen. */
static reason_t parse_compact(const uint8_t *b, Py_ssize_t n, commit_t *c, Py_ssize_t *klen)
{
    memset(c, 0, sizeof *c);
    if (n < 1)
        return "truncated";
    int family = b[0];
    if (family != AF_INET_ && family != AF_INET6_)
        return "bad_family";
    int alen = addr_len(family);
    Py_ssize_t off = 8 + 2 * alen;
    *klen = off;
    if (n < off + 9)
        return "truncated";
    tuple_t *t = &c->orig;
    t->family = family;
    t->proto = b[1];
    c->zone = be16(b + 2);
    memcpy(t->src, b + 4, alen);
    memcpy(t->dst, b + 4 + alen, alen);
    const uint8_t *l4 = b + 4 + 2 * alen;
    if (is_icmp(t->proto)) {
        t->icmp_id = be16(l4);
        t->icmp_type = l4[2];
        t->icmp_code = l4[3];
    } else {
        t->sport = be16(l4);
        t->dport = be16(l4 + 2);
    }
    c->status = be32(b + off);
    c->timeout = be32(b + off + 4);
    unsigned flags = b[off + 8];
    off += 9;
    if ((flags & ~(unsigned)(FLAG_MARK | FLAG_TCP | FLAG_WSCALE | FLAG_HELPER))
        || ((flags & FLAG_WSCALE) && !(flags & FLAG_TCP))
        || ((flags & FLAG_TCP) && t->proto != IPPROTO_TCP_))
        return "bad_flags";
    if (flags & FLAG_MARK) {
        if (off + 4 > n) return "truncated";
        c->mark = be32(b + off);
        off += 4;
    }
    if (c->status & IPS_DST_NAT) {
        if (off + alen + 2 > n) return "truncated";
        c->has_dnat = 1;
        memcpy(c->dnat_addr, b + off, alen);
        c->dnat_port = be16(b + off + alen);
        off += alen + 2;
    }
    if (c->status & IPS_SRC_NAT) {
        if (off + alen + 2 > n) return "truncated";
        c->has_snat = 1;
        memcpy(c->snat_addr, b + off, alen);
        c->snat_port = be16(b + off + alen);
        off += alen + 2;
    }
    if (flags & FLAG_TCP) {
        if (off + 3 > n) return "truncated";
        c->has_tcp = 1;
        c->tcp_state = b[off]; c->fo = b[off + 1]; c->fr = b[off + 2];
        off += 3;
        if (flags & FLAG_WSCALE) {
            if (off + 2 > n) return "truncated";
            c->has_ws = 1;
            c->wo = b[off]; c->wr = b[off + 1];
            off += 2;
        }
    }
    if (flags & FLAG_HELPER) {
        Py_ssize_t h = n - off;
        if (h < 1 || h > HELPER_MAX)
            return "bad_entry";
        for (Py_ssize_t i = off; i < n; i++)
            if (b[i] >= 0x80)
                return "bad_entry";
        c->helper = b + off;
        c->helper_len = h;
        off = n;
    }
    if (off != n)
        return "trailing_bytes";
    return NULL;
}

/* ---- the commit message (encode.commit_message) ------------------------------------------ */

/* Largest commit message without the helper: header 20, two IPv6 ICMP tuples 2 * 84, two
 * IPv6 NAT nests with ports 2 * 64, status, timeout, mark, zone 4 * 8, protoinfo 48 = 396. */
#define COMMIT_FIXED_MAX 400

/* The commit message of c, fields written as they are: a new bytes object, or NULL with a
 * Python exception set (memory). */
static PyObject *make_commit(const commit_t *c)
{
    uint8_t fixed[COMMIT_FIXED_MAX], *w = fixed + 20;
    const tuple_t *o = &c->orig;
    tuple_t inv;
    /* CTA_HELP{CTA_HELP_NAME name NUL, padded}; the name is at most HELPER_MAX bytes */
    Py_ssize_t help_len = c->helper_len ? 8 + ((c->helper_len + 1 + 3) & ~(Py_ssize_t)3) : 0;

    w = put_tuple(w, CTA_TUPLE_ORIG, o);
    invert(o, &inv);
    w = put_tuple(w, CTA_TUPLE_REPLY, &inv);  /* orig.inverse(), never the dumped reply */
    if (c->has_dnat)
        w = put_nat(w, CTA_NAT_DST, o, c->dnat_addr, c->dnat_port);
    if (c->has_snat)
        w = put_nat(w, CTA_NAT_SRC, o, c->snat_addr, c->snat_port);
    w = put_be32(w, CTA_STATUS, c->status);
    w = put_be32(w, CTA_TIMEOUT, c->timeout);
    if (c->mark)
        w = put_be32(w, CTA_MARK, c->mark);
    if (c->zone)
        w = put_be16(w, CTA_ZONE, c->zone);
    if (c->has_tcp) {
        /* kept flags plus BE_LIBERAL, as value and mask; window scales only if both known */
        int ws = c->has_ws;
        w = put_nla(w, ws ? 48 : 32, NLA_F_NESTED | CTA_PROTOINFO);
        w = put_nla(w, ws ? 44 : 28, NLA_F_NESTED | CTA_PROTOINFO_TCP);
        w = put_u8(w, TCP_STATE, c->tcp_state);
        if (ws) {
            w = put_u8(w, TCP_WSCALE_ORIG, c->wo);
            w = put_u8(w, TCP_WSCALE_REPLY, c->wr);
        }
        w = put_nla(w, 6, TCP_FLAGS_ORIG);  /* struct nf_ct_tcp_flags {flags, mask} */
        w[0] = w[1] = c->fo; w[2] = w[3] = 0; w += 4;
        w = put_nla(w, 6, TCP_FLAGS_REPLY);
        w[0] = w[1] = c->fr; w[2] = w[3] = 0; w += 4;
    }

    Py_ssize_t fixed_len = w - fixed, total = fixed_len + help_len;
    /* nlmsghdr (len, type, flags, seq 0, portid 0) + nfgenmsg (family, version 0, res_id 0) */
    uint32_t len32 = (uint32_t)total, zero = 0;
    uint16_t type = CT_NEW, flags = NLM_F_CREATE | NLM_F_EXCL | NLM_F_REQUEST;
    memcpy(fixed, &len32, 4);
    memcpy(fixed + 4, &type, 2);
    memcpy(fixed + 6, &flags, 2);
    memcpy(fixed + 8, &zero, 4);
    memcpy(fixed + 12, &zero, 4);
    fixed[16] = (uint8_t)o->family;
    fixed[17] = fixed[18] = fixed[19] = 0;

    PyObject *msg = PyBytes_FromStringAndSize(NULL, total);
    if (!msg)
        return NULL;
    uint8_t *m = (uint8_t *)PyBytes_AS_STRING(msg);
    memcpy(m, fixed, fixed_len);
    if (help_len) {
        uint8_t *h = m + fixed_len;
        h = put_nla(h, (unsigned)help_len, NLA_F_NESTED | CTA_HELP);
        h = put_nla(h, (unsigned)(4 + c->helper_len + 1), CTA_HELP_NAME);
        memcpy(h, c->helper, c->helper_len);
        memset(h + c->helper_len, 0, help_len - 8 - c->helper_len);  /* NUL and padding */
    }
    return msg;
}

/* ---- the filter ------------------------------------------------------------------------- */

typedef struct {
    int family;
    uint8_t addr[16], mask[16];  /* network_address.packed, netmask.packed */
} net_t;

typedef struct {
    PyObject_HEAD
    uint8_t protocols[32];   /* bitmaps over 0..255: a protocol and a TCP state are one byte */
    uint8_t tcp_states[32];
    Py_ssize_t n_nets;
    net_t *nets;
} FilterObject;

static PyTypeObject FilterType;
static PyObject *IPv4Network, *IPv6Network;  /* ipaddress classes */

/* Bits of the ints in `items` that are 0..255; others can never match a byte. */
static int fill_bitmap(uint8_t bits[32], PyObject *items, const char *what)
{
    PyObject *it = PyObject_GetIter(items), *x;
    if (!it)
        return -1;
    while ((x = PyIter_Next(it))) {
        PyObject *idx = PyNumber_Index(x);  /* operator.index, as the Python Filter */
        Py_DECREF(x);
        if (!idx) {
            PyErr_Format(PyExc_TypeError, "%s: not an integer", what);
            Py_DECREF(it);
            return -1;
        }
        int overflow;
        long v = PyLong_AsLongAndOverflow(idx, &overflow);
        Py_DECREF(idx);
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(it);
            return -1;
        }
        if (!overflow && v >= 0 && v <= 255)
            bits[v >> 3] |= 1 << (v & 7);
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

/* `packed` of obj.<name> into out (n bytes) */
static int packed_attr(PyObject *obj, const char *name, uint8_t *out, Py_ssize_t n)
{
    PyObject *a = PyObject_GetAttrString(obj, name), *p;
    if (!a)
        return -1;
    p = PyObject_GetAttrString(a, "packed");
    Py_DECREF(a);
    if (!p)
        return -1;
    if (!PyBytes_Check(p) || PyBytes_GET_SIZE(p) != n) {
        PyErr_Format(PyExc_TypeError, "ignore_addresses: %s.packed is not %zd bytes", name, n);
        Py_DECREF(p);
        return -1;
    }
    memcpy(out, PyBytes_AS_STRING(p), n);
    Py_DECREF(p);
    return 0;
}

static int Filter_init(FilterObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ignore_protocols", "ignore_tcp_states", "ignore_addresses", NULL};
    PyObject *protos = NULL, *states = NULL, *addrs = NULL, *seq = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OOO:Filter", kwlist, &protos, &states, &addrs))
        return -1;
    memset(self->protocols, 0, 32);
    memset(self->tcp_states, 0, 32);
    PyMem_Free(self->nets);
    self->nets = NULL;
    self->n_nets = 0;
    if (protos && fill_bitmap(self->protocols, protos, "ignore_protocols") < 0)
        return -1;
    if (states && fill_bitmap(self->tcp_states, states, "ignore_tcp_states") < 0)
        return -1;
    if (!addrs)
        return 0;
    seq = PySequence_Fast(addrs, "ignore_addresses: not iterable");
    if (!seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    self->nets = PyMem_Calloc(n ? n : 1, sizeof(net_t));
    if (!self->nets) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *net = PySequence_Fast_GET_ITEM(seq, i);  /* borrowed */
        net_t *d = &self->nets[i];
        int v4 = PyObject_IsInstance(net, IPv4Network), v6 = 0;
        if (v4 < 0 || (!v4 && (v6 = PyObject_IsInstance(net, IPv6Network)) < 0))
            goto fail;
        if (!v4 && !v6) {
            PyErr_Format(PyExc_TypeError, "ignore_addresses: not an IPv4Network/IPv6Network: %R", net);
            goto fail;
        }
        d->family = v4 ? AF_INET_ : AF_INET6_;
        if (packed_attr(net, "network_address", d->addr, v4 ? 4 : 16) < 0
            || packed_attr(net, "netmask", d->mask, v4 ? 4 : 16) < 0)
            goto fail;
        self->n_nets = i + 1;
    }
    Py_DECREF(seq);
    return 0;
fail:
    Py_DECREF(seq);
    return -1;
}

static void Filter_dealloc(FilterObject *self)
{
    PyMem_Free(self->nets);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static inline int bit(const uint8_t bits[32], unsigned v) { return v < 256 && (bits[v >> 3] >> (v & 7)) & 1; }

static int in_net(const net_t *net, int family, const uint8_t *a)
{
    int n = addr_len(family);
    if (net->family != family)  /* ipaddress: an address is never in a network of the other version */
        return 0;
    for (int i = 0; i < n; i++)
        if ((a[i] & net->mask[i]) != net->addr[i])
            return 0;
    return 1;
}

/* batch_python.Filter.matches (ctsync.replicator._filtered) */
static int filter_matches(const FilterObject *f, const entry_t *e)
{
    const tuple_t *o = &e->orig;
    if (bit(f->protocols, o->proto))
        return 1;
    if (e->has_tcp[0] && bit(f->tcp_states, e->tcp[0]))
        return 1;
    for (Py_ssize_t i = 0; i < f->n_nets; i++)
        if (in_net(&f->nets[i], o->family, o->src) || in_net(&f->nets[i], o->family, o->dst))
            return 1;
    return 0;
}

static PyTypeObject FilterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ctnetlink._batch.Filter",
    .tp_doc = PyDoc_STR("Filter(ignore_protocols=(), ignore_tcp_states=(), ignore_addresses=()):\n"
                        "what events() does not replicate (see ctnetlink.batch_python.Filter)."),
    .tp_basicsize = sizeof(FilterObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Filter_init,
    .tp_dealloc = (destructor)Filter_dealloc,
};

/* ---- module functions ------------------------------------------------------------------ */

static PyObject *CodecError;  /* ctnetlink.model.CodecError */
static PyObject *kind_obj[4]; /* KIND_* as ints */
static PyObject *reason_cache; /* dict: reason -> interned str */

static PyObject *reason_str(reason_t why)
{
    PyObject *s = PyDict_GetItemString(reason_cache, why);  /* borrowed */
    if (s) {
        Py_INCREF(s);
        return s;
    }
    s = PyUnicode_InternFromString(why);
    if (s && PyDict_SetItemString(reason_cache, why, s) < 0)
        Py_CLEAR(s);
    return s;
}

static int append_reason(PyObject *list, reason_t why)
{
    PyObject *s = reason_str(why);
    if (!s)
        return -1;
    int rc = PyList_Append(list, s);
    Py_DECREF(s);
    return rc;
}

/* Append a new reference (NULL: the exception of its constructor) to list, and drop it. */
static int append_new(PyObject *list, PyObject *item)
{
    if (!item)
        return -1;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

/* One CT_NEW/CT_DELETE message that is not skipped: decode, filter, key, encode, and
 * append its record, its error reason, or count it as filtered. -1: Python exception. */
static int one_event(const uint8_t *b, Py_ssize_t off, Py_ssize_t end, int kind, PyObject *portid,
                     const FilterObject *filt, PyObject *records, PyObject *errors, Py_ssize_t *filtered)
{
    entry_t e;
    reason_t why = parse_entry(b, off + 16, end, &e);
    if (why)
        return append_reason(errors, why);
    if (filt && filter_matches(filt, &e)) {
        (*filtered)++;
        return 0;
    }
    PyObject *key = make_key(&e.orig, e.zone), *msg;
    if (!key)
        return -1;
    if (kind == KIND_DESTROY) {
        msg = Py_None;
        Py_INCREF(msg);
    } else {
        commit_t c;
        if ((why = commit_of(&e, &c))) {
            Py_DECREF(key);
            return append_reason(errors, why);
        }
        if (!(msg = make_compact(&c))) {
            Py_DECREF(key);
            return -1;
        }
    }
    PyObject *record = PyTuple_Pack(4, kind_obj[kind], portid, key, msg);
    Py_DECREF(key);
    Py_DECREF(msg);
    return append_new(records, record);
}

/* The walk of events(): every message of b[0..n), appended to records / errors / other
 * (other may be NULL: then *n_other counts them). -1: Python exception. */
static int walk(const uint8_t *b, Py_ssize_t n, const FilterObject *f, PyObject *skip, int use_skip,
                PyObject *records, PyObject *errors, PyObject *other, Py_ssize_t *n_other,
                Py_ssize_t *skipped, Py_ssize_t *filtered)
{
    Py_ssize_t off = 0;
    while (off + 16 <= n) {
        /* struct nlmsghdr: len u32, type u16, flags u16, seq u32, portid u32 (host order) */
        uint32_t nlen = host32(b + off), seq = host32(b + off + 8), pid = host32(b + off + 12);
        uint16_t type = host16(b + off + 4), flags = host16(b + off + 6);
        if (nlen < 16 || (uint64_t)nlen > (uint64_t)(n - off))  /* no overflow with 32-bit sizes */
            return append_reason(errors, "bad_msg_len");  /* nothing after it can be trusted */
        if (type == CT_NEW || type == CT_DELETE) {
            PyObject *portid = PyLong_FromUnsignedLong(pid);
            if (!portid)
                return -1;
            int skip_it = use_skip ? PySequence_Contains(skip, portid) : 0;
            int rc = skip_it;
            if (skip_it > 0) {
                (*skipped)++;
            } else if (skip_it == 0) {
                int kind = type == CT_DELETE ? KIND_DESTROY : (flags & NLM_F_CREATE) ? KIND_NEW : KIND_UPDATE;
                rc = one_event(b, off, off + nlen, kind, portid, f, records, errors, filtered);
            }
            Py_DECREF(portid);
            if (rc < 0)
                return -1;
        } else if (!other) {
            (*n_other)++;
        } else if (append_new(other, Py_BuildValue("(nIIkk)", off, (unsigned)type, (unsigned)flags,
                                                   (unsigned long)seq, (unsigned long)pid)) < 0) {
            return -1;
        }
        off += ((Py_ssize_t)nlen + 3) & ~(Py_ssize_t)3;
    }
    if (off < n && append_reason(errors, "truncated") < 0)
        return -1;
    return 0;
}

/* filt and skip_portids as events() takes them: *f (NULL for None) and *use_skip. */
static int filter_and_skip(const char *fn, PyObject *filt, PyObject *skip, const FilterObject **f, int *use_skip)
{
    if (filt != Py_None && !PyObject_TypeCheck(filt, &FilterType)) {
        PyErr_Format(PyExc_TypeError, "%s: filt must be a %s or None, not %.100s",
                     fn, FilterType.tp_name, Py_TYPE(filt)->tp_name);
        return -1;
    }
    *f = filt == Py_None ? NULL : (const FilterObject *)filt;
    *use_skip = skip != Py_None && PyObject_IsTrue(skip);
    return *use_skip < 0 ? -1 : 0;
}

PyDoc_STRVAR(events_doc,
"events(buf, filt=None, skip_portids=None) -> (records, skipped, filtered, errors, other)\n\n"
"Walk one netlink datagram of conntrack events or dump parts; see ctnetlink.batch_python.events.");

static PyObject *batch_events(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"buf", "filt", "skip_portids", NULL};
    Py_buffer view;
    PyObject *filt = Py_None, *skip = Py_None;
    PyObject *records = NULL, *errors = NULL, *other = NULL, *result = NULL;
    Py_ssize_t skipped = 0, filtered = 0, n_other = 0;
    const FilterObject *f;
    int use_skip;
    (void)module;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*|OO:events", kwlist, &view, &filt, &skip))
        return NULL;
    if (filter_and_skip("events", filt, skip, &f, &use_skip) < 0)
        goto out;
    if (!(records = PyList_New(0)) || !(errors = PyList_New(0)) || !(other = PyList_New(0)))
        goto out;
    if (walk(view.buf, view.len, f, skip, use_skip, records, errors, other, &n_other, &skipped, &filtered) < 0)
        goto out;
    result = Py_BuildValue("(OnnOO)", records, skipped, filtered, errors, other);
out:
    Py_XDECREF(records);
    Py_XDECREF(errors);
    Py_XDECREF(other);
    PyBuffer_Release(&view);
    return result;
}

/* recv_events: datagrams per recvmmsg and the room for each (batch_python.RECV_SLOT). A
 * conntrack event is one message of well under 1 KiB; a larger datagram is cut and
 * reported as "truncated", as the reference does. */
#define RECV_VLEN 64
#define RECV_SLOT 16384
static uint8_t recv_buf[RECV_VLEN][RECV_SLOT];

PyDoc_STRVAR(recv_events_doc,
"recv_events(sock, max_datagrams=256, filt=None, skip_portids=None)\n"
"    -> (records, skipped, filtered, errors, other, datagrams, overrun, empty)\n\n"
"Read the datagrams queued on sock without waiting (recvmmsg, up to max_datagrams) and walk\n"
"each as events() does; see ctnetlink.batch_python.recv_events.");

static PyObject *batch_recv_events(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"sock", "max_datagrams", "filt", "skip_portids", NULL};
    PyObject *sock, *filt = Py_None, *skip = Py_None;
    PyObject *records = NULL, *errors = NULL, *result = NULL;
    Py_ssize_t max_dgrams = 256, skipped = 0, filtered = 0, n_other = 0, got = 0;
    int overrun = 0, empty = 0, use_skip;
    const FilterObject *f;
    struct mmsghdr msgs[RECV_VLEN];
    struct iovec iov[RECV_VLEN];
    (void)module;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|nOO:recv_events", kwlist, &sock, &max_dgrams, &filt, &skip))
        return NULL;
    int fd = PyObject_AsFileDescriptor(sock);
    if (fd < 0)
        return NULL;
    if (filter_and_skip("recv_events", filt, skip, &f, &use_skip) < 0)
        return NULL;
    if (!(records = PyList_New(0)) || !(errors = PyList_New(0)))
        goto out;
    while (got < max_dgrams) {
        unsigned vlen = (unsigned)(max_dgrams - got < RECV_VLEN ? max_dgrams - got : RECV_VLEN);
        memset(msgs, 0, sizeof msgs[0] * vlen);
        for (unsigned i = 0; i < vlen; i++) {
            iov[i].iov_base = recv_buf[i];
            iov[i].iov_len = RECV_SLOT;
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int r = recvmmsg(fd, msgs, vlen, MSG_DONTWAIT, NULL);
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                empty = 1;
                break;
            }
            if (errno == ENOBUFS) {  /* events were lost; what is queued is still readable */
                overrun = 1;
                continue;
            }
            if (errno == EINTR) {
                if (PyErr_CheckSignals() < 0)
                    goto out;
                continue;
            }
            PyErr_SetFromErrno(PyExc_OSError);
            goto out;
        }
        for (int i = 0; i < r; i++) {
            if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
                if (append_reason(errors, "truncated") < 0)
                    goto out;
                continue;
            }
            if (walk(recv_buf[i], msgs[i].msg_len, f, skip, use_skip, records, errors, NULL, &n_other,
                     &skipped, &filtered) < 0)
                goto out;
        }
        got += r;
    }
    result = Py_BuildValue("(OnnOnnOO)", records, skipped, filtered, errors, n_other, got,
                           overrun ? Py_True : Py_False, empty ? Py_True : Py_False);
out:
    Py_XDECREF(records);
    Py_XDECREF(errors);
    return result;
}

static PyObject *codec_error(reason_t why, const char *detail)
{
    PyObject *exc = PyObject_CallFunction(CodecError, "ss", why, detail);
    if (exc) {
        PyErr_SetObject(CodecError, exc);
        Py_DECREF(exc);
    }
    return NULL;
}

PyDoc_STRVAR(key_and_timeout_doc,
"key_and_timeout(msg) -> (key, timeout)\n\n"
"The identity key and the timeout of one CT_NEW message; CodecError on malformed input\n"
"(see ctnetlink.decode.key_and_timeout).");

static PyObject *batch_key_and_timeout(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    PyObject *result = NULL;
    (void)module;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        /* as the Python codec: too short for a header if its len() says so, else malformed */
        PyErr_Clear();
        Py_ssize_t len = PyObject_Length(arg);
        PyErr_Clear();
        if (len >= 0 && len < 20)
            return codec_error("truncated", "nlmsghdr");
        return codec_error("malformed", "not a bytes-like object");
    }
    const uint8_t *b = view.buf;
    Py_ssize_t n = view.len, off = 20, orig_p = -1, orig_end = 0;
    uint32_t timeout = 0;
    uint16_t zone = 0;
    int have_reply = 0, r;
    attr_t a;
    tuple_t t;
    reason_t why;

    if (n < 20) {
        codec_error("truncated", "nlmsghdr");
        goto out;
    }
    uint32_t len32 = host32(b);
    if (len32 < 20 || (uint64_t)len32 > (uint64_t)n) {
        codec_error("bad_msg_len", "nlmsg_len");
        goto out;
    }
    Py_ssize_t nlen = (Py_ssize_t)len32;
    if (host16(b + 4) != CT_NEW) {
        codec_error("not_ct_new", "message type");
        goto out;
    }
    /* the top level only; of the tuples, only the last CTA_TUPLE_ORIG is decoded */
    while ((r = next_attr(b, &off, nlen, &a)) > 0) {
        if (a.type == CTA_TUPLE_ORIG) {
            orig_p = a.p;
            orig_end = a.p - 4 + a.len;
        } else if (a.type == CTA_TUPLE_REPLY) {
            have_reply = 1;
        } else if (a.type == CTA_TIMEOUT) {
            if (a.len != 8) {
                codec_error("bad_attr_len", "timeout");
                goto out;
            }
            timeout = be32(b + a.p);
        } else if (a.type == CTA_ZONE) {
            if (a.len < 6) {
                codec_error("bad_attr_len", "zone");
                goto out;
            }
            zone = be16(b + a.p);
        }
    }
    if (r < 0)
        codec_error("bad_attr_len", "top level");
    else if (orig_p < 0)
        codec_error("no_orig_tuple", "");
    else if (!have_reply)
        codec_error("no_reply_tuple", "");
    else if ((why = parse_tuple(b, orig_p, orig_end, &t)))
        codec_error(why, "original tuple");
    else {
        PyObject *key = make_key(&t, zone);
        if (key)
            result = Py_BuildValue("(Nk)", key, (unsigned long)timeout);
    }
out:
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(expand_doc,
"expand(body) -> (key, timeout, message)\n\n"
"The identity key, the timeout and the commit message of a compact form (an events()\n"
"record's message); CodecError on malformed input (see ctnetlink.compact.expand).");

static PyObject *batch_expand(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    PyObject *key, *msg, *result = NULL;
    commit_t c;
    Py_ssize_t klen = 0;
    reason_t why;
    (void)module;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;  /* TypeError, as len() or slicing of a non-buffer in the reference */
    if ((why = parse_compact(view.buf, view.len, &c, &klen))) {
        codec_error(why, "compact form");
        goto out;
    }
    if (!(key = PyBytes_FromStringAndSize(view.buf, klen)))
        goto out;
    if (!(msg = make_commit(&c))) {
        Py_DECREF(key);
        goto out;
    }
    result = Py_BuildValue("(NkN)", key, (unsigned long)c.timeout, msg);
out:
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(accept_doc,
"accept(body) -> (key, timeout, message)\n\n"
"expand(body), refused (CodecError) unless the message is one a backup may keep and commit:\n"
"what ctnetlink.check.check_commit_body accepts, under the key it expands from (see\n"
"ctnetlink.batch_python.accept, the reference).");

/* check.HELP_NAME_MAX: NF_CT_HELPER_NAME_LEN - 1 */
#define HELP_NAME_MAX 15

/* expand() and what ctnetlink.check refuses of its message. make_commit writes the framing,
 * the headers and every attribute in the commit form by construction, so of check's rules
 * only those on values the compact form carries can fail, in check's order: the helper
 * name (1 to 15 printable ASCII characters: "attribute"), then the status (CONFIRMED and
 * none of COMMIT_STATUS_STRIP: "status"). Then the key the message commits must be the key
 * it came under ("bad_entry"): a key with ports for a protocol that has none expands to
 * another entry's message. The differential tests hold this to the reference. */
static PyObject *batch_accept(PyObject *module, PyObject *arg)
{
    PyObject *expanded, *again, *result = NULL;
    if (!(expanded = batch_expand(module, arg)))
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        Py_DECREF(expanded);
        return NULL;
    }
    commit_t c;
    Py_ssize_t klen = 0;
    char detail[96];
    int printable = 1;
    (void)parse_compact(view.buf, view.len, &c, &klen);  /* it parsed once already in expand */
    for (Py_ssize_t i = 0; i < c.helper_len; i++)  /* c.helper points into the view */
        if (c.helper[i] < 0x21 || c.helper[i] >= 0x7F)
            printable = 0;
    PyBuffer_Release(&view);
    if (!printable || c.helper_len > HELP_NAME_MAX) {
        codec_error("attribute", "help: the helper name is not 1 to 15 printable characters");
        goto out;
    }
    if (!(c.status & IPS_CONFIRMED) || (c.status & COMMIT_STATUS_STRIP)) {
        snprintf(detail, sizeof detail, "status %#x: needs CONFIRMED, none of %#x", (unsigned)c.status,
                 (unsigned)COMMIT_STATUS_STRIP);
        codec_error("status", detail);
        goto out;
    }
    if (!(again = batch_key_and_timeout(module, PyTuple_GET_ITEM(expanded, 2))))
        goto out;
    int same = PyObject_RichCompareBool(PyTuple_GET_ITEM(again, 0), PyTuple_GET_ITEM(expanded, 0), Py_EQ);
    Py_DECREF(again);
    if (same < 0)
        goto out;
    if (!same) {
        codec_error("bad_entry", "the key is not the key of the entry it expands to");
        goto out;
    }
    Py_INCREF(expanded);
    result = expanded;
out:
    Py_DECREF(expanded);
    return result;
}

static PyMethodDef methods[] = {
    {"events", (PyCFunction)(void (*)(void))batch_events, METH_VARARGS | METH_KEYWORDS, events_doc},
    {"recv_events", (PyCFunction)(void (*)(void))batch_recv_events, METH_VARARGS | METH_KEYWORDS, recv_events_doc},
    {"key_and_timeout", batch_key_and_timeout, METH_O, key_and_timeout_doc},
    {"expand", batch_expand, METH_O, expand_doc},
    {"accept", batch_accept, METH_O, accept_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "ctnetlink._batch",
    "The batch codec of ctnetlink in C; the reference is ctnetlink.batch_python.", -1, methods,
};

PyMODINIT_FUNC PyInit__batch(void)
{
    PyObject *m = NULL, *model = NULL, *ipaddress = NULL;
    if (PyType_Ready(&FilterType) < 0)
        return NULL;
    if (!(model = PyImport_ImportModule("ctnetlink.model")))
        goto fail;
    if (!(CodecError = PyObject_GetAttrString(model, "CodecError")))
        goto fail;
    if (!(ipaddress = PyImport_ImportModule("ipaddress")))
        goto fail;
    if (!(IPv4Network = PyObject_GetAttrString(ipaddress, "IPv4Network"))
        || !(IPv6Network = PyObject_GetAttrString(ipaddress, "IPv6Network")))
        goto fail;
    for (int k = KIND_NEW; k <= KIND_DESTROY; k++)
        if (!(kind_obj[k] = PyLong_FromLong(k)))
            goto fail;
    if (!(reason_cache = PyDict_New()))
        goto fail;
    if (!(m = PyModule_Create(&moduledef)))
        goto fail;
    Py_INCREF(&FilterType);
    if (PyModule_AddObject(m, "Filter", (PyObject *)&FilterType) < 0) {
        Py_DECREF(&FilterType);
        goto fail;
    }
    if (PyModule_AddIntConstant(m, "API_VERSION", API_VERSION) < 0
        || PyModule_AddIntConstant(m, "KIND_NEW", KIND_NEW) < 0
        || PyModule_AddIntConstant(m, "KIND_UPDATE", KIND_UPDATE) < 0
        || PyModule_AddIntConstant(m, "KIND_DESTROY", KIND_DESTROY) < 0)
        goto fail;
    Py_DECREF(model);
    Py_DECREF(ipaddress);
    return m;
fail:
    Py_XDECREF(m);
    Py_XDECREF(model);
    Py_XDECREF(ipaddress);
    return NULL;
}
