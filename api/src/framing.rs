//! Newline-delimited JSON messages over a byte stream.

use std::io::{BufRead, Write};

use serde::{de::DeserializeOwned, Serialize};

/// Largest message either side accepts (a full snapshot of a big node fits easily).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("message of more than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    #[error("malformed message: {error}: {text}")]
    Malformed {
        error: serde_json::Error,
        text: String,
    },
    #[error("could not encode message: {0}")]
    Encode(serde_json::Error),
}

/// Writes one message and its newline, then flushes.
pub fn write_message<T: Serialize>(out: &mut impl Write, message: &T) -> Result<(), FramingError> {
    let mut line = serde_json::to_vec(message).map_err(FramingError::Encode)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()?;
    Ok(())
}

/// Reads one message; `Ok(None)` when the peer closed the stream cleanly.
pub fn read_message<T: DeserializeOwned>(
    input: &mut impl BufRead,
) -> Result<Option<T>, FramingError> {
    let mut line = Vec::new();
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            if line.is_empty() {
                return Ok(None);
            }
            return Err(FramingError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(end) => {
                line.extend_from_slice(&chunk[..end]);
                input.consume(end + 1);
                break;
            }
            None => {
                let n = chunk.len();
                line.extend_from_slice(chunk);
                input.consume(n);
            }
        }
        if line.len() > MAX_MESSAGE_BYTES {
            return Err(FramingError::TooLarge);
        }
    }
    serde_json::from_slice(&line)
        .map(Some)
        .map_err(|error| FramingError::Malformed {
            error,
            text: String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    #[test]
    fn messages_round_trip_and_eof_is_none() {
        let mut buf = Vec::new();
        write_message(&mut buf, &vec![1u32, 2]).unwrap();
        write_message(&mut buf, &"two").unwrap();
        let mut r = BufReader::with_capacity(3, buf.as_slice());
        assert_eq!(read_message::<Vec<u32>>(&mut r).unwrap(), Some(vec![1, 2]));
        assert_eq!(
            read_message::<String>(&mut r).unwrap().as_deref(),
            Some("two")
        );
        assert!(read_message::<String>(&mut r).unwrap().is_none());
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        let mut r = BufReader::new(&b"{not json\n"[..]);
        let err = read_message::<u32>(&mut r).unwrap_err().to_string();
        assert!(err.starts_with("malformed message"), "{err}");
        let mut r = BufReader::new(&b"12"[..]);
        assert!(read_message::<u32>(&mut r).is_err());
    }
}
