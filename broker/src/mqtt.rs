//! Just enough MQTT (3.1.1 and 5) for the front door to enforce the broker's limits: packet
//! framing, and the few fields of CONNECT, PUBLISH, SUBSCRIBE and CONNACK that say what a client
//! asks the broker to remember — its client id, its will, the topics it publishes and retains, the
//! filters it subscribes to.
//!
//! Why here and not in rumqttd: rumqttd has no limit on any of these (see [`crate::limits`]), and
//! offers no hook between reading a packet and acting on it. Everything else in a packet is left
//! to rumqttd, which still parses and validates every byte: this module only reads, and refuses
//! what it cannot read, so nothing it lets through is something rumqttd would read differently.

/// Which MQTT a listener speaks; the same packet types are laid out differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// MQTT 3.1.1.
    V4,
    /// MQTT 5.
    V5,
}

/// MQTT control packet types (the high nibble of the first byte).
pub(crate) const CONNECT: u8 = 1;
pub(crate) const CONNACK: u8 = 2;
pub(crate) const PUBLISH: u8 = 3;
pub(crate) const SUBSCRIBE: u8 = 8;

/// The retain bit of a PUBLISH's first byte.
pub(crate) const PUBLISH_RETAIN: u8 = 0x01;
/// The will-retain bit of CONNECT's connect flags.
pub(crate) const CONNECT_WILL_RETAIN: u8 = 0x20;
/// The username bit of CONNECT's connect flags.
const CONNECT_USERNAME: u8 = 0x80;

/// A packet that does not follow the MQTT specification. The connection is closed: rumqttd would
/// close it too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed MQTT packet: {0}")]
pub(crate) struct Malformed(pub(crate) &'static str);

/// A complete packet's fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frame {
    /// The packet type.
    pub(crate) kind: u8,
    /// Bytes of the fixed header (first byte and remaining length).
    pub(crate) header_len: usize,
    /// Bytes after the fixed header.
    pub(crate) remaining: usize,
}

impl Frame {
    /// The whole packet's length.
    pub(crate) fn len(&self) -> usize {
        self.header_len + self.remaining
    }
}

/// Reads the fixed header at the start of `buf`. `Ok(None)` means more bytes are needed to know
/// the packet's length; a packet longer than `max_remaining` is refused before it is buffered.
pub(crate) fn frame(buf: &[u8], max_remaining: usize) -> Result<Option<Frame>, Malformed> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut remaining = 0usize;
    for (index, &byte) in buf[1..].iter().take(4).enumerate() {
        remaining |= usize::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            if remaining > max_remaining {
                return Err(Malformed("packet larger than the broker accepts"));
            }
            return Ok(Some(Frame {
                kind: first >> 4,
                header_len: index + 2,
                remaining,
            }));
        }
    }
    if buf.len() >= 5 {
        return Err(Malformed("remaining length longer than four bytes"));
    }
    Ok(None)
}

/// What a CONNECT asks the broker to remember.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Connect<'a> {
    /// The client id (empty: the broker assigns one).
    pub(crate) client_id: &'a str,
    /// The offset of the connect-flags byte within the packet.
    pub(crate) flags_offset: usize,
    /// The last will, if any.
    pub(crate) will: Option<Will<'a>>,
    /// The username, if any.
    pub(crate) username: Option<&'a str>,
}

/// A CONNECT's last will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Will<'a> {
    /// Where it is published.
    pub(crate) topic: &'a str,
    /// Its payload's length.
    pub(crate) payload_len: usize,
    /// Whether the broker retains it when it fires.
    pub(crate) retain: bool,
}

/// Reads a whole CONNECT packet.
pub(crate) fn connect(packet: &[u8], version: Version) -> Result<Connect<'_>, Malformed> {
    let mut reader = Reader::after_fixed_header(packet)?;
    reader.string()?; // protocol name; rumqttd checks it
    reader.u8()?; // protocol level; rumqttd checks it
    let flags_offset = reader.position;
    let flags = reader.u8()?;
    reader.u16()?; // keep-alive
    if version == Version::V5 {
        reader.properties()?;
    }
    let client_id = reader.string()?;
    let will = if flags & 0x04 != 0 {
        if version == Version::V5 {
            reader.properties()?;
        }
        let topic = reader.string()?;
        let payload_len = reader.binary()?.len();
        Some(Will {
            topic,
            payload_len,
            retain: flags & CONNECT_WILL_RETAIN != 0,
        })
    } else {
        None
    };
    let username = if flags & CONNECT_USERNAME != 0 {
        Some(reader.string()?)
    } else {
        None
    };
    Ok(Connect {
        client_id,
        flags_offset,
        will,
        username,
    })
}

/// What a PUBLISH asks of the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Publish<'a> {
    /// The topic; empty when an MQTT 5 client names it by its alias only.
    pub(crate) topic: &'a str,
    /// The MQTT 5 topic alias, if any.
    pub(crate) alias: Option<u16>,
    /// The retain flag.
    pub(crate) retain: bool,
    /// The payload's length.
    pub(crate) payload_len: usize,
}

/// Reads a whole PUBLISH packet.
pub(crate) fn publish(packet: &[u8], version: Version) -> Result<Publish<'_>, Malformed> {
    let first = packet.first().copied().unwrap_or_default();
    let qos = (first >> 1) & 0x03;
    if qos == 3 {
        return Err(Malformed("PUBLISH with QoS 3"));
    }
    let mut reader = Reader::after_fixed_header(packet)?;
    let topic = reader.string()?;
    if qos > 0 {
        reader.u16()?;
    }
    let alias = match version {
        Version::V4 => None,
        Version::V5 => reader.properties()?.topic_alias,
    };
    if topic.is_empty() && alias.is_none() {
        return Err(Malformed("PUBLISH without a topic"));
    }
    Ok(Publish {
        topic,
        alias,
        retain: first & PUBLISH_RETAIN != 0,
        payload_len: packet.len() - reader.position,
    })
}

/// Reads a whole SUBSCRIBE packet: its filters, as sent.
pub(crate) fn subscribe(packet: &[u8], version: Version) -> Result<Vec<&str>, Malformed> {
    let mut reader = Reader::after_fixed_header(packet)?;
    reader.u16()?; // packet id
    if version == Version::V5 {
        reader.properties()?;
    }
    let mut filters = Vec::new();
    while !reader.is_empty() {
        filters.push(reader.string()?);
        reader.u8()?; // subscription options; rumqttd checks them
    }
    if filters.is_empty() {
        return Err(Malformed("SUBSCRIBE without a filter"));
    }
    Ok(filters)
}

/// The return code (3.1.1) or reason code (5) of a whole CONNACK packet: 0 means accepted.
pub(crate) fn connack_code(packet: &[u8]) -> Result<u8, Malformed> {
    let mut reader = Reader::after_fixed_header(packet)?;
    reader.u8()?; // acknowledge flags
    reader.u8()
}

/// A CONNACK refusing the connection because the broker is at one of its limits: "server
/// unavailable" in MQTT 3.1.1, "quota exceeded" in MQTT 5.
pub(crate) fn refusing_connack(version: Version) -> &'static [u8] {
    match version {
        Version::V4 => &[0x20, 0x02, 0x00, 0x03],
        Version::V5 => &[0x20, 0x03, 0x00, 0x97, 0x00],
    }
}

/// A CONNACK refusing the client id: "identifier rejected" (3.1.1) or "client identifier not
/// valid" (5).
pub(crate) fn id_refusing_connack(version: Version) -> &'static [u8] {
    match version {
        Version::V4 => &[0x20, 0x02, 0x00, 0x02],
        Version::V5 => &[0x20, 0x03, 0x00, 0x85, 0x00],
    }
}

/// The MQTT 5 properties this module needs.
#[derive(Debug, Default)]
struct Properties {
    topic_alias: Option<u16>,
}

/// A bounds-checked reader over one whole packet.
struct Reader<'a> {
    packet: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn after_fixed_header(packet: &'a [u8]) -> Result<Self, Malformed> {
        let frame = frame(packet, usize::MAX)?.ok_or(Malformed("truncated fixed header"))?;
        if frame.len() != packet.len() {
            return Err(Malformed("packet length differs from its remaining length"));
        }
        Ok(Reader {
            packet,
            position: frame.header_len,
        })
    }

    fn is_empty(&self) -> bool {
        self.position >= self.packet.len()
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], Malformed> {
        let end = self
            .position
            .checked_add(len)
            .filter(|&end| end <= self.packet.len())
            .ok_or(Malformed("field runs past the end of the packet"))?;
        let bytes = &self.packet[self.position..end];
        self.position = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn binary(&mut self) -> Result<&'a [u8], Malformed> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    fn string(&mut self) -> Result<&'a str, Malformed> {
        std::str::from_utf8(self.binary()?).map_err(|_| Malformed("string is not UTF-8"))
    }

    fn varint(&mut self) -> Result<usize, Malformed> {
        let mut value = 0usize;
        for index in 0..4 {
            let byte = self.u8()?;
            value |= usize::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Malformed("variable byte integer longer than four bytes"))
    }

    /// Reads an MQTT 5 property block, keeping what this module needs.
    fn properties(&mut self) -> Result<Properties, Malformed> {
        let len = self.varint()?;
        let mut block = Reader {
            packet: self.take(len)?,
            position: 0,
        };
        let mut properties = Properties::default();
        while !block.is_empty() {
            match block.varint()? {
                // Byte.
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2a => {
                    block.u8()?;
                }
                // Two-byte integer; 0x23 is the topic alias.
                0x23 => properties.topic_alias = Some(block.u16()?),
                0x13 | 0x21 | 0x22 => {
                    block.u16()?;
                }
                // Four-byte integer.
                0x02 | 0x11 | 0x18 | 0x27 => {
                    block.take(4)?;
                }
                // Variable byte integer (subscription identifier).
                0x0b => {
                    block.varint()?;
                }
                // UTF-8 string or binary data.
                0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1a | 0x1c | 0x1f => {
                    block.binary()?;
                }
                // User property: a string pair.
                0x26 => {
                    block.binary()?;
                    block.binary()?;
                }
                _ => return Err(Malformed("unknown MQTT 5 property")),
            }
        }
        Ok(properties)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(first: u8, body: &[u8]) -> Vec<u8> {
        let mut packet = vec![first];
        let mut len = body.len();
        loop {
            let mut byte = (len % 128) as u8;
            len /= 128;
            if len > 0 {
                byte |= 0x80;
            }
            packet.push(byte);
            if len == 0 {
                break;
            }
        }
        packet.extend_from_slice(body);
        packet
    }

    fn string(s: &str) -> Vec<u8> {
        let mut bytes = (s.len() as u16).to_be_bytes().to_vec();
        bytes.extend_from_slice(s.as_bytes());
        bytes
    }

    #[test]
    fn frames_need_their_whole_length_and_respect_the_limit() {
        assert_eq!(frame(&[], 100), Ok(None));
        assert_eq!(frame(&[0x30], 100), Ok(None));
        assert_eq!(frame(&[0x30, 0x80], 100), Ok(None));
        assert_eq!(
            frame(&[0x30, 0x05], 100),
            Ok(Some(Frame {
                kind: PUBLISH,
                header_len: 2,
                remaining: 5
            }))
        );
        assert_eq!(
            frame(&[0x30, 0xc8, 0x01], 1000).map(|f| f.map(|f| f.remaining)),
            Ok(Some(200))
        );
        assert!(frame(&[0x30, 0xc8, 0x01], 199).is_err());
        assert!(frame(&[0x30, 0xff, 0xff, 0xff, 0xff], usize::MAX).is_err());
    }

    #[test]
    fn a_v4_connect_with_a_retained_will() {
        let mut body = string("MQTT");
        body.extend([4, 0b0010_0110, 0, 30]);
        body.extend(string("alice"));
        body.extend(string("bonker/desk/alice/status"));
        body.extend(string("offline"));
        let packet = packet(0x10, &body);
        let connect = connect(&packet, Version::V4).expect("parses");
        assert_eq!(connect.client_id, "alice");
        assert_eq!(packet[connect.flags_offset], 0b0010_0110);
        assert_eq!(
            connect.will,
            Some(Will {
                topic: "bonker/desk/alice/status",
                payload_len: 7,
                retain: true
            })
        );
        assert_eq!(connect.username, None);
    }

    #[test]
    fn a_connect_with_a_will_a_username_and_a_password() {
        let mut body = string("MQTT");
        body.extend([4, 0b1100_0110, 0, 30]);
        body.extend(string("bonker-agent-bob"));
        body.extend(string("bonker/desk/bob/status"));
        body.extend(string("offline"));
        body.extend(string("bob"));
        body.extend(string("secret"));
        let whole = packet(0x10, &body);
        let parsed = connect(&whole, Version::V4).expect("parses");
        assert_eq!(parsed.client_id, "bonker-agent-bob");
        assert_eq!(parsed.username, Some("bob"));
        let mut body = string("MQTT");
        body.extend([4, 0b1000_0000, 0, 30]);
        body.extend(string("c"));
        body.extend([0, 9, b'x']);
        assert!(
            connect(&packet(0x10, &body), Version::V4).is_err(),
            "a truncated username"
        );
    }

    #[test]
    fn a_v5_connect_skips_properties() {
        let mut body = string("MQTT");
        body.extend([5, 0b0000_0110, 0, 30]);
        body.extend([5, 0x11, 0, 0, 0, 60]); // session expiry
        body.extend(string("bob"));
        body.extend([2, 0x01, 1]); // will properties: payload format
        body.extend(string("w"));
        body.extend(string(""));
        let packet = packet(0x10, &body);
        let connect = connect(&packet, Version::V5).expect("parses");
        assert_eq!(connect.client_id, "bob");
        let will = connect.will.expect("will");
        assert_eq!((will.topic, will.payload_len, will.retain), ("w", 0, false));
    }

    #[test]
    fn publishes_in_both_versions() {
        let mut body = string("a/b");
        body.extend([0, 7]);
        body.extend(b"hello");
        let p = packet(0x33, &body); // QoS 1, retain
        let publish = publish(&p, Version::V4).expect("parses");
        assert_eq!(
            (publish.topic, publish.retain, publish.payload_len),
            ("a/b", true, 5)
        );

        let mut body = string("");
        body.extend([3, 0x23, 0, 9]); // topic alias 9
        body.extend(b"x");
        let p = packet(0x30, &body);
        let publish = super::publish(&p, Version::V5).expect("parses");
        assert_eq!(
            (publish.topic, publish.alias, publish.payload_len),
            ("", Some(9), 1)
        );

        let mut body = string("");
        body.push(0);
        assert!(super::publish(&packet(0x30, &body), Version::V5).is_err());
        assert!(super::publish(&packet(0x36, &string("a")), Version::V4).is_err());
    }

    #[test]
    fn subscribe_lists_filters() {
        let mut body = vec![0, 1];
        body.extend(string("a/+"));
        body.push(1);
        body.extend(string("$share/g/b/#"));
        body.push(0);
        let p = packet(0x82, &body);
        assert_eq!(
            subscribe(&p, Version::V4).expect("parses"),
            vec!["a/+", "$share/g/b/#"]
        );
        let mut v5 = vec![0, 1, 0];
        v5.extend(string("c"));
        v5.push(1);
        assert_eq!(
            subscribe(&packet(0x82, &v5), Version::V5).expect("parses"),
            vec!["c"]
        );
        assert!(subscribe(&packet(0x82, &[0, 1]), Version::V4).is_err());
    }

    #[test]
    fn truncated_and_overlong_fields_are_malformed() {
        let mut body = string("a/b");
        body.truncate(3);
        assert!(publish(&packet(0x30, &body), Version::V4).is_err());
        let mut body = string("MQTT");
        body.extend([4, 0x02, 0, 30, 0, 9, b'x']);
        assert!(connect(&packet(0x10, &body), Version::V4).is_err());
        let mut body = string("t");
        body.extend([4, 0x7f, 0, 0, 0]);
        assert!(publish(&packet(0x30, &body), Version::V5).is_err());
    }

    #[test]
    fn connack_codes() {
        assert_eq!(connack_code(&[0x20, 0x02, 0x00, 0x00]), Ok(0));
        assert_eq!(connack_code(refusing_connack(Version::V4)), Ok(3));
        assert_eq!(connack_code(refusing_connack(Version::V5)), Ok(0x97));
        assert_eq!(connack_code(id_refusing_connack(Version::V4)), Ok(2));
        assert_eq!(connack_code(id_refusing_connack(Version::V5)), Ok(0x85));
    }
}
