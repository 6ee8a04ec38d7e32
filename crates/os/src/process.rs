//! Process-wide set-up for command-line tools.

/// Restores the default action of SIGPIPE (terminate quietly), as C tools have it.
///
/// Rust ignores SIGPIPE, so a tool whose output is piped into `head` or `less` that exits
/// early got EPIPE on its next write, and `println!` panicked ("failed printing to
/// stdout: Broken pipe"). With the default action the tool ends as `cat` would. Call it
/// first thing in `main` of tools that print to stdout; never in a daemon (the validator,
/// the watchtower), whose sockets must report EPIPE as an error instead.
pub fn restore_default_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL installs no handler and touches
    // no Rust state; it is sound at any point in a single- or multi-threaded process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// An error and its causes on one line, `outer: cause: root cause`, as a tool prints it
/// before exiting — without repeating a cause the message above it already quotes.
///
/// Our error types put the underlying error into their message ("cannot read keypair file
/// X: No such file or directory") *and* expose it as `source()`, so printing the whole
/// chain (anyhow's `{:#}`) said everything twice.
pub fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let line = c.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_text;
    use std::io;

    #[derive(Debug)]
    struct Wrap(String, io::Error);
    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for Wrap {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.1)
        }
    }

    #[test]
    fn a_cause_the_message_already_quotes_is_not_repeated_and_one_it_does_not_is_kept() {
        let quoted = Wrap(
            "cannot read keypair file /k.json: gone".into(),
            io::Error::other("gone"),
        );
        assert_eq!(
            error_text(&quoted),
            "cannot read keypair file /k.json: gone"
        );
        let silent = Wrap(
            "cannot read keypair file /k.json".into(),
            io::Error::other("gone"),
        );
        assert_eq!(
            error_text(&silent),
            "cannot read keypair file /k.json: gone"
        );
    }
}
