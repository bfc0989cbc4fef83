#!/usr/bin/perl
# An independent DKIM verifier for the tests: Mail::DKIM (Debian libmail-dkim-perl, with
# libcryptx-perl for Ed25519), asking the DNS server on 127.0.0.1:PORT for public keys.
# Reads a message on standard input; prints "RESULT SELECTOR ALGORITHM DETAIL" per signature.
#   perl tests/dkim_verify.pl PORT < message.eml
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Net::DNS::Resolver;

my $port = shift or die "usage: $0 PORT < message\n";
Mail::DKIM::DNS::resolver(
    Net::DNS::Resolver->new(
        nameservers => ['127.0.0.1'],
        port        => $port,
        recurse     => 1,
        retry       => 2,
        udp_timeout => 5,
        tcp_timeout => 5,
    )
);
my $dkim = Mail::DKIM::Verifier->new();
binmode STDIN;
while (my $line = <STDIN>) {
    $line =~ s/\015?\012\z/\015\012/;    # SMTP's CRLF, whatever the file had
    $dkim->PRINT($line);
}
$dkim->CLOSE;
for my $signature ($dkim->signatures) {
    my $detail = $signature->result_detail;
    $detail =~ s/\s+/_/g;
    printf "%s %s %s %s\n", $signature->result, $signature->selector, $signature->algorithm,
        $detail;
}
