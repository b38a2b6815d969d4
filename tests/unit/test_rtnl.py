"""vnet's netlink client: message encoding and decoding, without a kernel (the integration tests
drive it against real ones)."""

from __future__ import annotations

import socket
import struct

from vnet.drivers import rtnl


def message(mtype: int, body: bytes, flags: int = 0, seq: int = 1) -> memoryview:
    return memoryview(struct.pack("=IHHII", 16 + len(body), mtype, flags, seq, 0) + body)


def test_attributes_are_padded_to_four_bytes_and_read_back_in_order():
    raw = rtnl.a_str(rtnl.IFLA_IFNAME, "br0") + rtnl.a_u32(rtnl.IFLA_MTU, 9000) + rtnl.attr(7, b"\x01")
    assert len(raw) % 4 == 0
    got = [(k, bytes(v)) for k, v in rtnl.attrs(raw, 0, len(raw))]
    assert got == [(rtnl.IFLA_IFNAME, b"br0\0"), (rtnl.IFLA_MTU, struct.pack("=I", 9000)), (7, b"\x01")]


def test_a_link_message_decodes_to_what_observe_reads():
    tun_data = rtnl.attr(rtnl.IFLA_TUN_TYPE, b"\x02") + rtnl.a_u32(rtnl.IFLA_TUN_OWNER, 1000) + rtnl.attr(rtnl.IFLA_TUN_MULTI_QUEUE, b"\x01")
    info = rtnl.a_str(rtnl.IFLA_INFO_KIND, "tun") + rtnl.attr(rtnl.IFLA_INFO_DATA, tun_data)
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 1, 42, rtnl.IFF_UP, 0) + b"".join([
        rtnl.a_str(rtnl.IFLA_IFNAME, "vt-lab-web0"),
        rtnl.a_str(rtnl.IFLA_IFALIAS, "vnet:lab:tap:web"),
        rtnl.a_u32(rtnl.IFLA_MASTER, 7),
        rtnl.a_mac(rtnl.IFLA_ADDRESS, "fe:54:00:18:72:01"),
        rtnl.a_u32(rtnl.IFLA_MTU, 1500),
        rtnl.a_u32(rtnl.IFLA_GROUP, 5),
        rtnl.attr(rtnl.IFLA_LINKINFO, info),
        rtnl.attr(99, b"\xff" * 64),  # statistics and the like: skipped
    ])
    link = rtnl.parse_link(message(rtnl.RTM_NEWLINK, body))
    assert (link.index, link.ifname, link.alias, link.master, link.mac, link.mtu, link.group, link.up) == (
        42, "vt-lab-web0", "vnet:lab:tap:web", 7, "fe:54:00:18:72:01", 1500, 5, True)
    assert link.kind == "tun"
    assert link.data == {"IFLA_TUN_TYPE": 2, "IFLA_TUN_OWNER": 1000, "IFLA_TUN_MULTI_QUEUE": 1}


def test_attributes_with_flags_in_their_type_decode_as_without():
    """A kernel may mark a nested attribute NLA_F_NESTED (and a value NLA_F_NET_BYTEORDER): the
    type is what is left without those bits."""
    nested, net_order = 0x8000, 0x4000
    info = rtnl.a_str(rtnl.IFLA_INFO_KIND | net_order, "veth")
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 1, 3, 0, 0) + b"".join([
        rtnl.a_str(rtnl.IFLA_IFNAME, "ve-lab-c1"),
        rtnl.a_u32(rtnl.IFLA_MTU | net_order, 9000),
        rtnl.attr(rtnl.IFLA_LINKINFO | nested, info),
    ])
    link = rtnl.parse_link(message(rtnl.RTM_NEWLINK, body))
    assert (link.ifname, link.mtu, link.kind, link.up) == ("ve-lab-c1", 9000, "veth", False)


def test_a_veth_request_carries_the_peer_born_in_its_namespace():
    mtype, flags, body = rtnl.new_link("ve-lab-c1", "veth", info_data=rtnl.veth_peer("eth0", 9, "52:54:00:00:00:01"), mac="0e:00:00:00:00:01", master=3, up=True)
    assert mtype == rtnl.RTM_NEWLINK and flags & rtnl.F_CREATE and flags & rtnl.F_EXCL
    _, _, index, ifflags, change = struct.unpack_from("=BxHiII", body)
    assert (index, ifflags & rtnl.IFF_UP, change) == (0, rtnl.IFF_UP, rtnl.IFF_UP)
    top = dict((k, bytes(v)) for k, v in rtnl.attrs(body, 16, len(body)))
    assert top[rtnl.IFLA_IFNAME] == b"ve-lab-c1\0" and struct.unpack("=I", top[rtnl.IFLA_MASTER]) == (3,)
    info = dict((k, bytes(v)) for k, v in rtnl.attrs(top[rtnl.IFLA_LINKINFO], 0, len(top[rtnl.IFLA_LINKINFO])))
    assert info[rtnl.IFLA_INFO_KIND] == b"veth\0"
    (peer_kind, peer), = [(k, bytes(v)) for k, v in rtnl.attrs(info[rtnl.IFLA_INFO_DATA], 0, len(info[rtnl.IFLA_INFO_DATA]))]
    assert peer_kind == rtnl.VETH_INFO_PEER
    peer_attrs = dict((k, bytes(v)) for k, v in rtnl.attrs(peer, 16, len(peer)))
    assert peer_attrs[rtnl.IFLA_IFNAME] == b"eth0\0"
    assert struct.unpack("=I", peer_attrs[rtnl.IFLA_NET_NS_FD]) == (9,)
    assert peer_attrs[rtnl.IFLA_ADDRESS] == bytes.fromhex("525400000001")


def test_set_by_name_sends_no_index_and_set_by_index_no_name():
    _, _, by_name = rtnl.set_link(ifname="lo", alias="vnet:t:netns:c1", up=True)
    assert struct.unpack_from("=BxHiII", by_name)[2] == 0
    assert rtnl.IFLA_IFNAME in dict(rtnl.attrs(by_name, 16, len(by_name)))
    _, _, by_index = rtnl.set_link(5, ifname="ignored", group=77)
    attrs = dict((k, bytes(v)) for k, v in rtnl.attrs(by_index, 16, len(by_index)))
    assert struct.unpack_from("=BxHiII", by_index)[2] == 5
    assert rtnl.IFLA_IFNAME not in attrs and struct.unpack("=I", attrs[rtnl.IFLA_GROUP]) == (77,)


def test_routes_and_addresses_decode():
    body = struct.pack("=BBBBBBBBI", socket.AF_INET, 24, 0, 0, 254, 86, 0, rtnl.RTN_UNICAST, 0)
    body += rtnl.a_ip(rtnl.RTA_DST, "10.77.3.0") + rtnl.a_u32(rtnl.RTA_OIF, 4) + rtnl.a_ip(rtnl.RTA_GATEWAY, "10.77.3.1")
    rt = rtnl.parse_route(message(rtnl.RTM_NEWROUTE, body))
    assert (rt.dst, rt.dst_len, rt.oif, rt.gateway, rt.proto, rt.table) == ("10.77.3.0", 24, 4, "10.77.3.1", 86, 254)
    _, _, add = rtnl.add_addr(4, "10.77.3.1", 24, proto=86)
    a = rtnl.parse_addr(message(rtnl.RTM_NEWADDR, add))
    assert (a.index, a.address, a.local, a.prefixlen, a.proto) == (4, "10.77.3.1", "10.77.3.1", 24, 86)


def test_a_deletion_matches_any_scope_and_only_vnets_protocol():
    _, _, body = rtnl.del_route("0.0.0.0", 0, oif=3, proto=86)
    _, dst_len, _, _, table, proto, scope, _, _ = struct.unpack_from("=BBBBBBBBI", body)
    assert (dst_len, table, proto, scope) == (0, 254, 86, rtnl.RT_SCOPE_NOWHERE)
    assert rtnl.RTA_DST not in dict(rtnl.attrs(body, 12, len(body)))  # the default route has no destination


def test_kernel_errors_carry_errno_and_the_extended_ack_text():
    request = struct.pack("=IHHII", 32, rtnl.RTM_NEWLINK, 5, 9, 0) + b"\0" * 16
    tlv = rtnl.a_str(rtnl.NLMSGERR_ATTR_MSG, "Unknown device type")
    err = struct.pack("=i", -95) + request[:16] + tlv  # capped: the request's header only
    e = rtnl.Netlink._error(message(rtnl.NLMSG_ERROR, err, flags=rtnl.NLM_F_CAPPED | rtnl.NLM_F_ACK_TLVS))
    assert e.code == 95 and "Unknown device type" in str(e)
    assert rtnl.Netlink._error(message(rtnl.NLMSG_ERROR, struct.pack("=i", 0) + request[:16])) is None


def test_a_table_comment_is_read_from_its_user_data():
    from vnet.drivers.nft import _comment

    assert _comment(b"\x00\x0avnet:x:ab\x00") == "vnet:x:ab"
    assert _comment(None) is None and _comment(b"") is None


def test_set_element_keys_are_found_through_the_nesting():
    key = rtnl.attr(rtnl.NFTA_SET_ELEM_KEY, rtnl.attr(rtnl.NFTA_DATA_VALUE, b"\xef\xbe\x00\x00"))
    elems = rtnl.attr(1, key) + rtnl.attr(1, rtnl.attr(rtnl.NFTA_SET_ELEM_KEY, rtnl.attr(rtnl.NFTA_DATA_VALUE, b"\x01\x00\x00\x00")))
    body = struct.pack("=BBH", rtnl.NFPROTO_INET, 0, 0) + rtnl.a_str(rtnl.NFTA_SET_ELEM_LIST_TABLE, "vnet-x") + rtnl.attr(rtnl.NFTA_SET_ELEM_LIST_ELEMENTS, elems)
    msg = message(rtnl.NFT_SUBSYS | 12, body)
    path = (rtnl.NFTA_SET_ELEM_LIST_ELEMENTS, None, rtnl.NFTA_SET_ELEM_KEY, rtnl.NFTA_DATA_VALUE)
    assert [bytes(v) for v in rtnl._walk(msg, 20, path)] == [b"\xef\xbe\x00\x00", b"\x01\x00\x00\x00"]
