//! `numeric` in PostgreSQL's binary format, both ways: parameters that may
//! be NaN or ±Infinity (which `BigDecimal` cannot hold), and results read
//! as their exact text with the column's display scale (which sqlx's
//! `BigDecimal` decoding drops). Kept together because both sides speak the
//! same format: base-10000 digits, a weight, a sign word and the scale.

use std::{fmt::Write as _, str::FromStr};

use bigdecimal::BigDecimal;
use sqlx::{
    Decode, Encode, Postgres, Type,
    encode::IsNull,
    error::BoxDynError,
    postgres::{
        PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueFormat, PgValueRef, types::Oid,
    },
};

/// A decimal parameter's text as a `numeric`, NaN and ±Infinity included.
pub(super) fn parse_decimal(text: &str) -> Result<NumericParam, String> {
    // The special values, as PostgreSQL spells them (and sqlgate returns them).
    let special = match text {
        "NaN" => Some(0xC000),
        "Infinity" => Some(0xD000),
        "-Infinity" => Some(0xF000),
        _ => None,
    };
    match special {
        Some(sign) => Ok(NumericParam::Special(sign)),
        None => BigDecimal::from_str(text)
            .map(NumericParam::Finite)
            .map_err(|_| "not a decimal".to_owned()),
    }
}

/// A `numeric` parameter: a finite decimal, or NaN / ±Infinity, which
/// `BigDecimal` cannot hold (sent in numeric's binary format: no digits,
/// the special value in the sign word).
pub(super) enum NumericParam {
    Finite(BigDecimal),
    Special(u16),
}

impl Type<Postgres> for NumericParam {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(1700))
    }
}

impl PgHasArrayType for NumericParam {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(1231))
    }
}

impl Encode<'_, Postgres> for NumericParam {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        match self {
            Self::Finite(decimal) => {
                <BigDecimal as Encode<'_, Postgres>>::encode_by_ref(decimal, buf)
            }
            Self::Special(sign) => {
                // ndigits, weight, sign, dscale.
                for word in [0, 0, *sign, 0] {
                    buf.extend_from_slice(&word.to_be_bytes());
                }
                Ok(IsNull::No)
            }
        }
    }
}

/// `numeric` read as its exact text. sqlx's `BigDecimal` decoding drops the
/// column's display scale (`1.50` would come back as `1.5000`), so sqlgate
/// reads the binary format itself: base-10000 digits, a weight, a sign and
/// the display scale. NaN and infinities come back as PostgreSQL spells them.
pub(super) struct NumericText(pub(super) String);

impl Type<Postgres> for NumericText {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(1700))
    }
}

impl PgHasArrayType for NumericText {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(1231))
    }
}

impl<'r> Decode<'r, Postgres> for NumericText {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        match value.format() {
            PgValueFormat::Text => Ok(Self(value.as_str()?.to_owned())),
            PgValueFormat::Binary => numeric_text(value.as_bytes()?).map(Self),
        }
    }
}

fn numeric_text(bytes: &[u8]) -> Result<String, BoxDynError> {
    let word = |at: usize| -> Result<i16, BoxDynError> {
        bytes
            .get(at..at + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "numeric value is truncated".into())
    };
    let ndigits = usize::try_from(word(0)?)?;
    let weight = i64::from(word(2)?);
    let sign = word(4)? as u16;
    let dscale = usize::try_from(word(6)?)?;
    match sign {
        0xC000 => return Ok("NaN".to_owned()),
        0xD000 => return Ok("Infinity".to_owned()),
        0xF000 => return Ok("-Infinity".to_owned()),
        _ => {}
    }
    let digits = (0..ndigits)
        .map(|i| word(8 + 2 * i))
        .collect::<Result<Vec<_>, _>>()?;
    let digit = |i: i64| -> i16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut text = String::with_capacity(8 + 4 * ndigits + dscale);
    if sign == 0x4000 {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        for i in 0..=weight {
            if i == 0 {
                let _ = write!(text, "{}", digit(i));
            } else {
                let _ = write!(text, "{:04}", digit(i));
            }
        }
    }
    if dscale > 0 {
        text.push('.');
        let start = text.len();
        let mut group = weight + 1;
        while text.len() - start < dscale {
            let _ = write!(text, "{:04}", digit(group));
            group += 1;
        }
        text.truncate(start + dscale);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::numeric_text;

    fn encode(ndigits: i16, weight: i16, sign: u16, dscale: i16, digits: &[i16]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for word in [ndigits, weight, sign as i16, dscale].iter().chain(digits) {
            bytes.extend_from_slice(&word.to_be_bytes());
        }
        bytes
    }

    #[test]
    fn numeric_binary_keeps_the_display_scale() {
        // 1.50 as numeric(10,2): one digit group "1", one fractional group "5000", dscale 2.
        assert_eq!(
            numeric_text(&encode(2, 0, 0, 2, &[1, 5000])).expect("ok"),
            "1.50"
        );
        // 12345678.9 with dscale 10.
        assert_eq!(
            numeric_text(&encode(3, 1, 0, 10, &[1234, 5678, 9000])).expect("ok"),
            "12345678.9000000000"
        );
        // -0.0000000001: weight -3 puts the digit in the third fractional group.
        assert_eq!(
            numeric_text(&encode(1, -3, 0x4000, 10, &[100])).expect("ok"),
            "-0.0000000001"
        );
        // Zero with scale.
        assert_eq!(numeric_text(&encode(0, 0, 0, 3, &[])).expect("ok"), "0.000");
        // 10000 (trailing zero groups are not sent).
        assert_eq!(
            numeric_text(&encode(1, 1, 0, 0, &[1])).expect("ok"),
            "10000"
        );
        assert_eq!(
            numeric_text(&encode(0, 0, 0xC000, 0, &[])).expect("ok"),
            "NaN"
        );
        assert!(
            numeric_text(&[0, 1]).is_err(),
            "truncated input is an error, not a panic"
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = numeric_text(&bytes);
        }
    }
}
